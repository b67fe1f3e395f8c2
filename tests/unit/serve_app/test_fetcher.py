"""The Fetcher decodes where it reads: what leaves it is a row and a model-sized array, never the study's bytes."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from serve_app.fetcher import Fetcher
from xraylab.errors import RejectedInputError, RejectReason
from xraylab.imaging import PreprocessSpec
from xraylab.messages import FetchedObject, ObjectToProcess, PreparedObject, StudyMetadata, study_uid
from xraylab.model_input import InputPreparer
from xraylab.settings import Settings
from xraylab.synthetic import encode_jpeg, generate_xray

SPEC = PreprocessSpec(height=64, width=64)
JPEG = encode_jpeg(generate_xray(np.random.default_rng(0), True, size=600))


class Store:
    """Stand-in for ``xraylab.sources.Sources``: one object per key."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects, self.threads = objects, set()

    def fetch(self, endpoint_id, bucket, key, *, alt_key=None) -> FetchedObject:
        self.threads.add(threading.current_thread().name)
        if key not in self.objects:
            raise RejectedInputError(RejectReason.MISSING_OBJECT, "NoSuchKey")
        return FetchedObject(self.objects[key], "etag-" + key, "image/jpeg", StudyMetadata(hospital="st-mary"),
                             endpoint_id, fetch_ms=1.0, key=key)


def fetcher(objects: dict[str, bytes]):
    settings = Settings(_env_file=None)
    replica = Fetcher.func_or_class.__new__(Fetcher.func_or_class)
    replica._settings, replica._sources = settings, Store(objects)
    replica._preparer = InputPreparer(settings.image_limits())
    replica._pool = ThreadPoolExecutor(4, thread_name_prefix="fetch")
    replica._decode = ThreadPoolExecutor(2, thread_name_prefix="decode")
    return replica


def test_each_object_is_read_and_decoded_with_the_given_chain_or_refused_in_place() -> None:
    replica = fetcher({"a.jpeg": JPEG, "bad.jpeg": b"\xff\xd8 truncated"})
    items = [ObjectToProcess(bucket="b", key=k) for k in ("a.jpeg", "gone.jpeg", "bad.jpeg")]
    got = asyncio.run(replica.fetch_many(items, SPEC.to_dict()))
    assert isinstance(got[0], PreparedObject)
    assert got[0].image.pixels.shape == (64, 64, 1) and got[0].image.spec == SPEC.key()
    assert got[0].record.study_uid == study_uid("local", "b", "a.jpeg", "etag-a.jpeg")
    assert got[0].record.size_bytes == len(JPEG) and got[0].fetch_ms == 1.0
    assert not hasattr(got[0], "data"), "the bytes stay in the Fetcher"
    assert isinstance(got[1], RejectedInputError) and got[1].reason is RejectReason.MISSING_OBJECT
    assert got[1].study_uid is None, "never read: no study"
    assert isinstance(got[2], RejectedInputError) and got[2].reason is RejectReason.NOT_IMAGE
    assert got[2].study_uid == study_uid("local", "b", "bad.jpeg", "etag-bad.jpeg"), "read, so it names its study"
    assert replica._sources.threads <= {f"fetch_{i}" for i in range(4)}, "reading in the I/O pool"
