import os
from pathlib import Path

import pytest

from ui.review_app import trained_on_synthetic
from xraylab.registry import ModelCard, promote
from xraylab.registry.signing import sign_dir

pytestmark = pytest.mark.usefixtures("model_keys")  # promote checks signatures (tests/conftest.py's key pair)


def write_card(root: Path, version: str, trained_on: str) -> None:
    (root / version).mkdir(parents=True)
    card = ModelCard(version=version, architecture="t", preprocess={}, bands={}, trained_on=trained_on)
    import json

    (root / version / "card.json").write_text(json.dumps(card.to_dict()))
    sign_dir(root / version, version, Path(os.environ["XRAYLAB_MODEL_SIGNING_KEY"]))  # as publishing does


def test_warning_follows_the_model_that_scored(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr("ui.review_app.SERVING_TTL_S", 0.0)  # the serving version read again at every call
    assert trained_on_synthetic(None, "anything")  # no registry: always warn
    assert trained_on_synthetic(tmp_path, None)  # empty registry: warn
    write_card(tmp_path, "synth-1", "synthetic")
    write_card(tmp_path, "real-1", "Kaggle chest-xray (real)")
    promote(tmp_path, "synth-1")
    assert trained_on_synthetic(tmp_path, None)
    assert trained_on_synthetic(tmp_path, "synth-1") and not trained_on_synthetic(tmp_path, "real-1")
    promote(tmp_path, "real-1")
    assert not trained_on_synthetic(tmp_path, None)
    assert trained_on_synthetic(tmp_path, "unknown-version")  # unknown: warn


def test_the_serving_version_is_read_at_most_every_few_seconds(tmp_path: Path, monkeypatch) -> None:
    import ui.review_app as review_app

    monkeypatch.setattr(review_app, "_SERVING", {})
    write_card(tmp_path, "synth-1", "synthetic")
    write_card(tmp_path, "real-1", "Kaggle chest-xray (real)")
    promote(tmp_path, "synth-1")
    assert trained_on_synthetic(tmp_path, None)
    promote(tmp_path, "real-1")
    assert trained_on_synthetic(tmp_path, None), "within the TTL the version read before still counts"
    monkeypatch.setattr(review_app, "SERVING_TTL_S", 0.0)
    assert not trained_on_synthetic(tmp_path, None)


def test_study_details_show_the_dicom_tags_as_text_never_as_markup() -> None:
    from ui.review_views import details_html

    detail = {"id": 7, "band": "Unsure", "score": 0.7, "model_version": "m1", "patient_name": "[x](https://evil)",
              "patient_id": "P*1*", "hospital": "st-mary", "study_date": "2026-11-04",
              "content_type": "application/dicom", "size_bytes": 10, "endpoint_id": "pacs", "modality": "DX",
              "view_position": "PA", "patient_sex": "F", "patient_age": "34 y", "accession_number": "<i>A1</i>",
              "manufacturer": "<b>ACME</b>", "study_instance_uid": "1.2.3", "study_description": "CHEST PA"}
    text = details_html(detail, notice="")
    assert "<dd>[x](https://evil) (ID P*1*)</dd>" in text
    assert "manufacturer &lt;b&gt;ACME&lt;/b&gt;; Study Instance UID 1.2.3" in text and "<b>" not in text
    assert "<dd>&lt;i&gt;A1&lt;/i&gt;</dd>" in text and "<dd>34 y / F</dd>" in text and "CHEST PA" in text
    assert "from pacs" in text
    jpeg = {**detail, "modality": None, "study_instance_uid": None}
    assert "DICOM" not in details_html(jpeg, notice="")


def test_the_notice_names_the_real_data_and_research_use(tmp_path: Path, monkeypatch) -> None:
    from ui.review_app import model_notice
    from ui.review_views import details_html
    from xraylab.registry import SYNTHETIC_NOTICE

    monkeypatch.setattr("ui.review_app.SERVING_TTL_S", 0.0)
    write_card(tmp_path, "synth-1", "synthetic")
    write_card(tmp_path, "real-1", "Kermany et al. 2018 paediatric chest X-rays (CC BY 4.0)")
    assert model_notice(tmp_path, "synth-1") == SYNTHETIC_NOTICE == model_notice(tmp_path, "gone")
    notice = model_notice(tmp_path, "real-1")
    assert "Kermany" in notice and "research use only, not a medical device" in notice
    detail = {"id": 3, "band": "Normal", "score": 0.2, "model_version": "real-1"}
    assert notice in details_html(detail, notice) and "⚠️" not in details_html(detail, notice)
    assert f"⚠️ <strong>{SYNTHETIC_NOTICE}</strong>" in details_html(detail, SYNTHETIC_NOTICE)
