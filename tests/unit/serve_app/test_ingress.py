"""The HTTP routes of the ingress, on its FastAPI app with stand-in handles (no Ray cluster)."""

import asyncio

import pytest
from fastapi.testclient import TestClient
from ray import cloudpickle

from serve_app.ingress import Ingress
from tests.unit.serve_app.handles import Handle
from xraylab.accounts import create_api_key, create_user
from xraylab.db.session import Database, upgrade_schema
from xraylab.errors import RejectedInputError, RejectReason
from xraylab.imaging import PreprocessSpec
from xraylab.messages import ModelInput, ObjectToProcess, OutcomeStatus, Verdict
from xraylab.registry import SYNTHETIC_NOTICE
from xraylab.settings import load_settings

VERDICT = Verdict(score=0.91, band="Pneumonia", model_version="v1", synthetic_model=True, infer_ms=2.0,
                  notice=SYNTHETIC_NOTICE)


def jpeg(seed: int = 0, size: int = 256) -> bytes:
    import numpy as np

    from xraylab.synthetic import encode_jpeg, generate_xray

    return encode_jpeg(generate_xray(np.random.default_rng(seed), True, size=size))


JPEG = jpeg()
SPEC = PreprocessSpec(height=64, width=64)


def classify_many(inputs: list[ModelInput]) -> list:
    """The Classifier as the Ingress now calls it: model inputs decoded in the Ingress, never bytes."""
    assert all(isinstance(i, ModelInput) and i.pixels.shape == (64, 64, 1) and i.spec == SPEC.key() for i in inputs)
    return [VERDICT for _ in inputs]


@pytest.fixture()
def ingress(tmp_path) -> Ingress:
    classifier = Handle(classify_many=classify_many, model_card=lambda: {"version": "v1"},
                        preprocess_spec=SPEC.to_dict)
    # As in a replica: Serve ships the class to it by value (cloudpickle), with only the globals its code uses.
    shipped = cloudpickle.loads(cloudpickle.dumps(Ingress.func_or_class))
    user_class = shipped.__mro__[1]  # the class under Serve's ASGI wrapper
    assert user_class.__module__ == "serve_app.ingress" and "process_batch" in vars(user_class)
    ingress = user_class(Handle(), classifier, Handle(check_health=lambda: None), "default", False)
    ingress.settings = load_settings(STATE_DIR=tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}")
    db = Database(ingress.settings.DATABASE_URL)
    upgrade_schema(db.engine)
    with db.session() as session:
        create_user(session, "pacs-gateway", "a long enough password", "doctor")
        ingress.api_key = create_api_key(session, "pacs-gateway", "tests")
    return ingress


def client_of(ingress: Ingress) -> TestClient:
    """A client that sends the ingress's API key, as a PACS gateway or script does."""
    return TestClient(ingress.__serve_build_asgi_app__(), headers={"Authorization": f"Bearer {ingress.api_key}"})


def test_predict_raw_and_multipart_and_bad_bytes(ingress: Ingress) -> None:
    client = client_of(ingress)
    raw = client.post("/v1/predict", content=JPEG)
    assert raw.status_code == 200, raw.text
    assert raw.json()["score"] == 0.91 and raw.json()["model_version"] == "v1" and "synthetic" in raw.json()["notice"]
    multipart = client.post("/v1/predict", files={"file": ("x.jpeg", JPEG)})
    assert multipart.status_code == 200 and multipart.json()["band"] == "Pneumonia"
    bad = client.post("/v1/predict", content=b"not an image")
    assert bad.status_code == 400 and bad.json() == {"error": "not_image",
                                                     "detail": "not a JPEG, PNG or DICOM Part 10 file"}
    blank = client.post("/v1/predict", content=jpeg(size=32))
    assert blank.status_code == 400 and blank.json()["error"] == "not_radiograph", "the serving limits hold here"
    assert client.get("/healthz").json() == {"status": "ok", "model_version": "v1"}


def test_batch_route_answers_each_image(ingress: Ingress) -> None:
    client = client_of(ingress)
    files = [("files", ("a.jpeg", JPEG)), ("files", ("b.txt", b"report")), ("files", ("c.jpeg", jpeg(1)))]
    answer = client.post("/v1/predict/batch", files=files)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["filename"] for r in results] == ["a.jpeg", "b.txt", "c.jpeg"]
    assert results[0]["score"] == 0.91 and results[2]["band"] == "Pneumonia"
    assert results[1] == {"filename": "b.txt", "error": "not_image", "detail": "not a JPEG, PNG or DICOM Part 10 file"}
    assert "synthetic" in answer.json()["notice"]
    assert client.post("/v1/predict/batch", content=JPEG).json()["error"] == "not_multipart"
    too_many = [("files", (f"{i}.jpeg", b"\xff\xd8")) for i in range(257)]
    assert client.post("/v1/predict/batch", files=too_many).status_code == 413


def test_a_batch_may_be_larger_than_one_image_but_not_each_file(ingress: Ingress) -> None:
    """XRAYLAB_MAX_BATCH_BYTES caps a batch body; each file in it is still held to XRAYLAB_MAX_IMAGE_BYTES."""
    ingress.settings = ingress.settings.model_copy(update={"MAX_IMAGE_BYTES": 100_000, "MAX_BATCH_BYTES": 400_000})
    client = client_of(ingress)
    big = JPEG + b"\0" * (100_001 - len(JPEG))  # trailing bytes after the JPEG's end: still the picture
    files = [("files", (f"{i}.jpeg", JPEG + b"\0" * 60_000)) for i in range(3)] + [("files", ("big.jpeg", big))]
    answer = client.post("/v1/predict/batch", files=files)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r.get("band") for r in results[:3]] == ["Pneumonia"] * 3, "a body over MAX_IMAGE_BYTES, each file under"
    assert results[3]["error"] == "too_large" and "100001 bytes" in results[3]["detail"]
    over = [("files", (f"{i}.jpeg", JPEG + b"\0" * 150_000)) for i in range(3)]
    assert client.post("/v1/predict/batch", files=over).status_code == 413
    assert client.post("/v1/predict", content=big).status_code == 413


def test_process_runs_the_step(ingress: Ingress) -> None:
    missing = RejectedInputError(RejectReason.MISSING_OBJECT, "NoSuchKey")
    ingress.step.fetcher = Handle(fetch_many=lambda items, spec: [missing for _ in items])
    [outcome] = asyncio.run(ingress.process_batch([ObjectToProcess(bucket="b", key="k")]))
    assert outcome.status is OutcomeStatus.REJECTED and outcome.reason is RejectReason.MISSING_OBJECT


def test_a_body_over_the_limit_is_refused_by_the_ingress_too(ingress: Ingress) -> None:
    """For a proxy started without serve_app.body_limit's hook: the Ingress's app caps bodies itself."""
    client = client_of(ingress)
    limit = ingress.settings.MAX_IMAGE_BYTES
    refused = client.post("/v1/predict", content=b"\xff\xd8" + b"x" * limit)
    assert refused.status_code == 413 and refused.json()["error"] == "too_large"
    assert client.post("/v1/predict", content=JPEG).status_code == 200


def test_the_api_needs_a_key_and_every_answer_carries_the_security_headers(ingress: Ingress) -> None:
    anonymous = TestClient(ingress.__serve_build_asgi_app__())
    for method, path in [("post", "/v1/predict"), ("post", "/v1/predict/batch"), ("get", "/v1/model"),
                         ("get", "/docs"), ("get", "/openapi.json"), ("get", "/ui/"), ("get", "/no/such/route")]:
        answer = getattr(anonymous, method)(path, content=b"\xff\xd8 jpeg") if method == "post" else \
            anonymous.get(path)
        assert answer.status_code == 401, (path, answer.status_code)
        assert answer.json()["error"] == "login_required"
    wrong = anonymous.post("/v1/predict", content=b"\xff\xd8", headers={"Authorization": "Bearer xrk_abc_def"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
    keyed = client_of(ingress)
    for answer in (keyed.get("/v1/model"), keyed.get("/openapi.json"), anonymous.get("/healthz"),
                   anonymous.get("/login"), wrong):
        assert answer.status_code in (200, 401)
        assert answer.headers["x-frame-options"] == "DENY" and answer.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["cache-control"] == "no-store"
    assert keyed.get("/v1/model").json() == {"version": "v1"}
    assert keyed.get("/openapi.json").status_code == 200  # development: the docs, behind a key or login


def test_production_serves_no_api_docs(ingress: Ingress) -> None:
    ingress.settings = ingress.settings.model_copy(update={"ENV": "production"})
    keyed = client_of(ingress)
    assert keyed.get("/docs").status_code == 404 and keyed.get("/openapi.json").status_code == 404
    assert keyed.get("/v1/model").status_code == 200
