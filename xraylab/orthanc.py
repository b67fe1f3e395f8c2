"""The PACS as a source: Orthanc's REST API (``/system``, ``/changes``, ``/instances/{id}/file``).

An instance from the PACS travels through the pipeline like an S3 object: its event names the endpoint
``ORTHANC_ENDPOINT_ID``, the "bucket" ``instances`` and, as its key, Orthanc's instance id (a SHA-1 of the patient
id and the study, series and SOP instance UIDs: ``orthanc_instance_id``), so a study stored twice in the PACS is
one object and one row (its eTag is the file's MD5). Credentials come from settings; events and logs carry the
instance id only.
"""

from __future__ import annotations

import hashlib
import re
import time
from typing import Any

from xraylab.dicom import DICOM_MEDIA_TYPE
from xraylab.errors import RejectedInputError, RejectReason
from xraylab.messages import FetchedObject, StudyMetadata
from xraylab.settings import Settings

__all__ = ["OrthancClient", "OrthancError", "orthanc_instance_id", "fetch_instance", "PACS_BUCKET",
           "is_instance_id"]

PACS_BUCKET = "instances"
_INSTANCE_ID = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")


class OrthancError(RuntimeError):
    """Orthanc answered with an error (not a missing instance): a transient failure for the pipeline."""


def orthanc_instance_id(patient_id: str, study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
    """The id Orthanc gives an instance: SHA-1 of ``patient|study|series|instance`` as five groups of 8 hex."""
    digest = hashlib.sha1("|".join([patient_id, study_uid, series_uid, sop_instance_uid]).encode()).hexdigest()
    return "-".join(digest[i:i + 8] for i in range(0, 40, 8))


def is_instance_id(value: str) -> bool:
    return bool(_INSTANCE_ID.match(value))


class OrthancClient:
    """A thread-safe client of one Orthanc server (``requests``, HTTP basic auth)."""

    def __init__(self, url: str, user: str, password: str, *, timeout_s: float = 30.0) -> None:
        import requests
        from requests.adapters import HTTPAdapter

        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.session = requests.Session()
        self.session.auth = (user, password)
        self.session.mount("http://", HTTPAdapter(pool_connections=4, pool_maxsize=32))
        self.session.mount("https://", HTTPAdapter(pool_connections=4, pool_maxsize=32))

    @classmethod
    def from_settings(cls, settings: Settings) -> OrthancClient:
        password = settings.ORTHANC_PASSWORD.get_secret_value()
        if not password and settings.ENV == "production":
            raise ValueError("XRAYLAB_ORTHANC_PASSWORD is empty: production reads the PACS only with credentials")
        return cls(settings.ORTHANC_URL, settings.ORTHANC_USER, password)

    def _get(self, path: str, **kwargs: Any) -> Any:
        response = self.session.get(self.url + path, timeout=self.timeout_s, **kwargs)
        if response.status_code == 401:
            response.close()
            raise OrthancError(f"Orthanc refused the credentials ({path}): check XRAYLAB_ORTHANC_USER/PASSWORD")
        return response

    def system(self) -> dict[str, Any]:
        """``GET /system``: the server's name and version; raises unless it answers."""
        response = self._get("/system")
        if response.status_code != 200:
            raise OrthancError(f"GET /system answered {response.status_code}")
        return dict(response.json())

    def changes(self, since: int, limit: int = 100) -> dict[str, Any]:
        """``GET /changes``: ``{"Changes": [{"ChangeType", "ID", "ResourceType", "Seq", "Date", ...}], "Done",
        "Last"}``, the changes after sequence number ``since``."""
        response = self._get("/changes", params={"since": since, "limit": limit})
        if response.status_code != 200:
            raise OrthancError(f"GET /changes answered {response.status_code}")
        return dict(response.json())

    def _instance_get(self, instance_id: str, path: str = "") -> Any:
        """``GET /instances/{id}{path}``: the answer, or None for an id that is none or an instance not there."""
        if not is_instance_id(instance_id):
            return None
        response = self._get(f"/instances/{instance_id}{path}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise OrthancError(f"GET /instances/<id>{path} answered {response.status_code}")
        return response

    def has_instance(self, instance_id: str) -> bool:
        """Whether the PACS holds the instance (``GET /instances/{id}``)."""
        return self._instance_get(instance_id) is not None

    def remote_aet(self, instance_id: str) -> str | None:
        """The calling AE title that stored the instance by C-STORE (Orthanc's ``RemoteAET`` metadata), None when
        it came otherwise or is not there."""
        response = self._instance_get(instance_id, "/metadata/RemoteAET")
        return None if response is None else str(response.text).strip()

    def instance_md5(self, instance_id: str, *, max_bytes: int) -> str | None:
        """The MD5 (hex) of the instance's file, the eTag ``fetch_instance`` gives it, or None when the PACS does
        not hold it: Orthanc's own record of its attachment's MD5, without reading the file; where Orthanc keeps
        none (``StoreMD5`` off), the file's, read to ``max_bytes``."""
        if not is_instance_id(instance_id):
            return None
        response = self._get(f"/instances/{instance_id}/attachments/dicom/md5")
        if response.status_code == 200:
            return str(response.text).strip().strip('"')
        if not self.has_instance(instance_id):
            return None
        return hashlib.md5(self.instance_file(instance_id, max_bytes=max_bytes), usedforsecurity=False).hexdigest()

    def instance_file(self, instance_id: str, *, max_bytes: int) -> bytes:
        """The instance's DICOM file. Raises ``RejectedInputError`` (``missing_object``, ``too_large``,
        ``invalid_name``) for what retrying cannot fix, ``OrthancError`` or a ``requests`` error otherwise."""
        if not is_instance_id(instance_id):
            raise RejectedInputError(RejectReason.INVALID_NAME, "not an Orthanc instance id")
        response = self._get(f"/instances/{instance_id}/file", stream=True)
        with response:
            if response.status_code == 404:
                raise RejectedInputError(RejectReason.MISSING_OBJECT, "no such instance in the PACS")
            if response.status_code != 200:
                raise OrthancError(f"GET /instances/<id>/file answered {response.status_code}")
            length = int(response.headers.get("Content-Length") or 0)
            if length > max_bytes:
                raise RejectedInputError(RejectReason.TOO_LARGE, f"{length} bytes > {max_bytes}")
            chunks, size = [], 0
            for chunk in response.iter_content(1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    raise RejectedInputError(RejectReason.TOO_LARGE, f"more than {max_bytes} bytes")
                chunks.append(chunk)
        return b"".join(chunks)


def fetch_instance(client: OrthancClient, instance_id: str, *, max_bytes: int, endpoint_id: str,
                   hospital: str | None = None) -> FetchedObject:
    """An instance as the Fetcher returns objects (its tags read later, by ``xraylab.dicom.with_tags``)."""
    t0 = time.perf_counter()
    data = client.instance_file(instance_id, max_bytes=max_bytes)
    # The eTag is the file's MD5, as an S3 store's is: an instance deleted and sent again with other pixels under
    # the same UIDs (the same Orthanc id) is a new study row, scored anew; the same file again is not.
    return FetchedObject(data=data, etag=hashlib.md5(data, usedforsecurity=False).hexdigest(),
                         content_type=DICOM_MEDIA_TYPE,
                         metadata=StudyMetadata(hospital=hospital or None), endpoint_id=endpoint_id,
                         fetch_ms=(time.perf_counter() - t0) * 1000, key=instance_id)
