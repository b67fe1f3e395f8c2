"""The SR and the Grad-CAM secondary capture that xraylab stores back into a PACS (``delivery.dicom_results``): valid
for dicom3tools' ``dciodvfy``, rendered by DCMTK's ``dsrdump`` with the finding, score, model version and research
notice, in the source's study, with UIDs a resend repeats."""

from __future__ import annotations

import logging
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage

from delivery.dicom_results import (
    HEATMAP_SERIES_NUMBER,
    RESEARCH_STATEMENT,
    SR_SERIES_NUMBER,
    build_heatmap_image,
    build_report,
    result_datasets,
)
from delivery.result import ScoredStudy, result_uid
from ingest.dicom_files import ModalityStudy, build_dataset
from xraylab.bands import NORMAL, PNEUMONIA, UNSURE

DCIODVFY = shutil.which("dciodvfy")
DSRDUMP = shutil.which("dsrdump")
needs_dciodvfy = pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) is not installed")
needs_dsrdump = pytest.mark.skipif(DSRDUMP is None, reason="dsrdump (Debian package dcmtk) is not installed")

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
VERSION = "2024.06-densenet121-r3"
NOTICE = "Trained on the public Kermany chest X-ray set (paediatric, Guangzhou)."


def _source(tmp_path: Path, *, orientation: bool = True, body_part: bool = True, offset: str | None = None,
            burned_in: bool = False) -> pydicom.Dataset:
    """A DX chest image as a modality writes it (the project's simulated modality), read back from a Part 10 file
    without its pixels, as the delivery reads the PACS's instance."""
    pixels = (np.add.outer(np.arange(96), np.arange(80)) % 256).astype(np.uint8)
    study = ModalityStudy(patient_id="PID-0042", patient_name="Jane Doe", study_date=date(2024, 3, 1),
                          hospital="St Elsewhere", birth_date=date(1970, 1, 2), accession="ACC-77")
    ds = build_dataset(pixels, study, burn_in=burned_in)
    if orientation:
        ds.PatientOrientation = ["L", "F"]  # DX Image module, type 1: a PA chest
    if not body_part:
        del ds.BodyPartExamined
    if offset is not None:
        ds.TimezoneOffsetFromUTC = offset
    path = tmp_path / f"source-{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return pydicom.dcmread(path, stop_before_pixels=True)


def _result(source: pydicom.Dataset, *, band: str = PNEUMONIA, score: float = 0.873, version: str = VERSION,
            research_only: bool = True, notice: str = NOTICE) -> ScoredStudy:
    return ScoredStudy(
        study_id=17, study_uid="9f2c1e0d4b", prediction_id=5, score=score, band=band, model_name="densenet121",
        model_version=version, card_reference="s3://xraylab-models/pneumonia/2024.06/card.json", notice=notice,
        research_only=research_only, scored_at=datetime(2024, 3, 1, 12, 30, 5, tzinfo=UTC), hospital="St Elsewhere",
        patient_id="PID-0042", study_instance_uid=source.StudyInstanceUID, modality="DX",
    )


def _overlay(source: pydicom.Dataset) -> np.ndarray:
    overlay = np.zeros((int(source.Rows), int(source.Columns), 3), np.uint8)
    overlay[..., 0] = 200
    overlay[20:50, 10:40, 1] = 120
    return overlay


def _dciodvfy(path: Path) -> list[str]:
    """dciodvfy's error lines for ``path``; its warnings are printed (shown with ``-s`` or on failure)."""
    proc = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=30)
    lines = [line.strip() for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    for line in lines:
        if line.startswith("Warning"):
            print(f"dciodvfy {path.name}: {line}")  # noqa: T201
    return [line for line in lines if line.startswith("Error")]


def _dsrdump(path: Path) -> str:
    proc = subprocess.run([DSRDUMP, "+Pl", str(path)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _write(ds: pydicom.Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


@needs_dciodvfy
@pytest.mark.parametrize(
    ("band", "variant"),
    [(PNEUMONIA, {}), (UNSURE, {"offset": "+0100", "burned_in": True}),
     (NORMAL, {"orientation": False, "body_part": False})],
)
def test_both_objects_pass_dciodvfy(tmp_path: Path, band: str, variant: dict) -> None:
    source = _source(tmp_path, **variant)
    result = _result(source, band=band, score={PNEUMONIA: 0.873, UNSURE: 0.7, NORMAL: 0.12}[band])
    report, image = result_datasets(source, result, _overlay(source), institution_name="St Elsewhere Imaging")
    for name, ds in (("report", report), ("heatmap", image)):
        errors = _dciodvfy(_write(ds, tmp_path / f"{name}.dcm"))
        assert errors == [], f"{name}: {errors}"


@needs_dsrdump
@pytest.mark.parametrize(("band", "score"), [(PNEUMONIA, 0.873), (UNSURE, 0.65), (NORMAL, 0.125)])
def test_dsrdump_shows_finding_score_version_and_notice(tmp_path: Path, band: str, score: float) -> None:
    source = _source(tmp_path)
    result = _result(source, band=band, score=score)
    text = _dsrdump(_write(build_report(source, result), tmp_path / "sr.dcm"))
    assert f'"{result.finding}"' in text
    assert f'="{score:g}"' in text
    assert f'"Algorithm Version")="{VERSION}"' in text
    assert f"xraylab pneumonia triage {VERSION}" in text
    assert "not a medical device" in text
    assert result.card_reference in text and NOTICE in text


@needs_dsrdump
def test_no_research_statement_when_not_research_only(tmp_path: Path) -> None:
    source = _source(tmp_path)
    result = _result(source, research_only=False)
    text = _dsrdump(_write(build_report(source, result), tmp_path / "sr.dcm"))
    assert RESEARCH_STATEMENT not in text
    assert "not a medical device" not in build_heatmap_image(source, result, _overlay(source)).ImageComments


def test_same_study_and_patient_new_series_deterministic_uids(tmp_path: Path) -> None:
    source = _source(tmp_path)
    result = _result(source)
    report, image = result_datasets(source, result, _overlay(source))
    again_report, again_image = result_datasets(source, result, _overlay(source))
    newer_report, newer_image = result_datasets(source, replace(result, model_version="2024.09-r4"), _overlay(source))

    for ds in (report, image):
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.PatientID == source.PatientID == "PID-0042"
        assert ds.AccessionNumber == source.AccessionNumber
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert ds.Manufacturer == "xraylab" and ds.SoftwareVersions == VERSION
        assert ds.InstanceNumber == 1
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert report.SeriesInstanceUID == result_uid("sr-series", result.study_uid, VERSION)
    assert report.SOPInstanceUID == result_uid("sr-instance", result.study_uid, VERSION)
    assert image.SeriesInstanceUID == result_uid("heatmap-series", result.study_uid, VERSION)
    assert image.SOPInstanceUID == result_uid("heatmap-instance", result.study_uid, VERSION)
    assert (report.SOPClassUID, image.SOPClassUID) == (COMPREHENSIVE_SR, SecondaryCaptureImageStorage)
    assert (report.SeriesNumber, image.SeriesNumber) == (SR_SERIES_NUMBER, HEATMAP_SERIES_NUMBER)
    assert report.SeriesDescription == f"xraylab pneumonia triage {VERSION}"
    assert image.SeriesDescription == f"xraylab Grad-CAM {VERSION}"
    # a resend repeats every UID, including those inside the report's content
    assert [d.SOPInstanceUID for d in (again_report, again_image)] == [report.SOPInstanceUID, image.SOPInstanceUID]
    assert again_report.ContentSequence == report.ContentSequence
    # a new model version is a new series (and instance) of both
    assert newer_report.SeriesInstanceUID != report.SeriesInstanceUID
    assert newer_image.SeriesInstanceUID != image.SeriesInstanceUID
    assert newer_report.SOPInstanceUID != report.SOPInstanceUID
    # the report references the source image as evidence in its study
    evidence = report.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == source.StudyInstanceUID
    assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
        source.SOPInstanceUID


def test_heatmap_pixels_times_and_annotation(tmp_path: Path) -> None:
    source = _source(tmp_path, offset="+0100", burned_in=True)
    result = _result(source)
    overlay = _overlay(source)
    image = build_heatmap_image(source, result, overlay, institution_name="St Elsewhere Imaging")
    path = _write(image, tmp_path / "heatmap.dcm")
    back = pydicom.dcmread(path)
    assert back.PhotometricInterpretation == "RGB" and back.SamplesPerPixel == 3 and back.BitsAllocated == 8
    assert np.array_equal(back.pixel_array, overlay)
    assert back.BurnedInAnnotation == "YES"  # the film under the map carries the patient's name
    assert back.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert "Grad-CAM" in back.DerivationDescription and VERSION in back.DerivationDescription
    assert NOTICE in back.ImageComments and RESEARCH_STATEMENT in back.ImageComments
    assert back.InstitutionName == "St Elsewhere Imaging"
    # the source states +0100: 12:30:05 UTC is written as 13:30:05 with the same offset
    assert (back.ContentDate, back.ContentTime, back.TimezoneOffsetFromUTC) == ("20240301", "133005", "+0100")

    plain_source = _source(tmp_path)
    plain = build_heatmap_image(plain_source, _result(plain_source), overlay)
    assert plain.BurnedInAnnotation == "NO"
    assert (str(plain.ContentDate), str(plain.ContentTime)) == ("20240301", "123005")
    assert "TimezoneOffsetFromUTC" not in plain  # the study's times are the hospital's, unstated: no offset claimed


def test_long_version_is_truncated_for_lo(tmp_path: Path) -> None:
    source = _source(tmp_path)
    result = _result(source, version="v" * 80)
    report, image = result_datasets(source, result, _overlay(source))
    for ds in (report, image):
        assert len(ds.SeriesDescription) <= 64 and len(ds.SoftwareVersions) <= 64


def test_rejects_bad_inputs(tmp_path: Path) -> None:
    source = _source(tmp_path)
    result = _result(source)
    with pytest.raises(ValueError, match="overlay_rgb"):
        build_heatmap_image(source, result, np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="overlay_rgb"):
        build_heatmap_image(source, result, np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="band"):
        build_report(source, replace(result, band="Maybe"))
    with pytest.raises(ValueError, match="StudyInstanceUID"):
        build_report(source, replace(result, study_instance_uid="1.2.3.4"))


def test_logs_carry_no_patient_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = _source(tmp_path)
    with caplog.at_level(logging.DEBUG, logger="delivery.dicom_results"):
        result_datasets(source, _result(source), _overlay(source))
    assert caplog.records
    assert "Doe" not in caplog.text and "Jane" not in caplog.text


@needs_dciodvfy
def test_invalid_patient_values_of_the_source_are_left_out_not_refused(tmp_path: Path) -> None:
    """A PACS holds what modalities sent: an unknown sex or an impossible birth date would make highdicom refuse
    the results for good; they are left empty instead (a lower-case sex is read as the upper-case one), and the
    objects stay valid."""
    source = _source(tmp_path)
    source.PatientSex, source.PatientBirthDate = "X", "19701302"
    report, image = result_datasets(source, _result(source), _overlay(source))
    for name, ds in (("report", report), ("heatmap", image)):
        assert not ds.PatientBirthDate and ds.PatientSex in ("", None)
        assert _dciodvfy(_write(ds, tmp_path / f"{name}.dcm")) == [], name
    source.PatientSex = "f "
    assert result_datasets(source, _result(source), _overlay(source))[0].PatientSex == "F"


def test_results_are_recognised_as_ours_and_refused_as_input(tmp_path: Path) -> None:
    """Stored into the PACS, the results would come back as new instances: the pipeline refuses them by name."""
    from xraylab.dicom import check_supported, is_own_result
    from xraylab.errors import RejectReason
    from xraylab.imaging import InvalidImageError

    source = _source(tmp_path)
    assert not is_own_result(source)
    for ds in result_datasets(source, _result(source), _overlay(source)):
        assert is_own_result(ds)
        with pytest.raises(InvalidImageError) as refused:
            check_supported(ds)
        assert refused.value.reason is RejectReason.OWN_RESULT
