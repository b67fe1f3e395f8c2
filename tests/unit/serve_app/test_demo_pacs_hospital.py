"""A PACS study's hospital: the PACS's own (XRAYLAB_ORTHANC_HOSPITAL) where it is configured, else its
InstitutionName; the demo configures it to a hospital its doctor reads, so that no demo PACS study is left
without one (the Hospital filter and a hospital reader's scope find them)."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import numpy as np
import pytest

from ingest.dicom_files import ModalityStudy, build_dataset
from ingest.uploader import HOSPITALS
from serve_app.demo import demo_pacs_hospitals
from xraylab.settings import Settings
from xraylab.sources import Sources

ROOT = Path(__file__).resolve().parents[3]


class FakePacs:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def instance_file(self, instance_id: str, *, max_bytes: int) -> bytes:
        return self.data


def pacs_file(institution: str | None) -> bytes:
    import io

    ds = build_dataset(np.full((64, 64), 100, np.uint8), ModalityStudy("P1", "Ana Okafor", date(2026, 11, 4), ""))
    if institution is None:
        del ds.InstitutionName  # a modality that writes none
    else:
        ds.InstitutionName = institution
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def fetched_hospital(tmp_path: Path, configured: str, institution: str | None) -> str | None:
    settings = Settings(_env_file=None, STATE_DIR=tmp_path, ORTHANC_HOSPITAL=configured)
    sources = Sources(settings)
    sources._pacs = FakePacs(pacs_file(institution))  # type: ignore[assignment]
    return sources.fetch(settings.ORTHANC_ENDPOINT_ID, "instances", "0a-1b").metadata.hospital


@pytest.mark.parametrize(("configured", "institution", "hospital"), [
    ("st-mary", None, "st-mary"),  # a file with no InstitutionName: the PACS's hospital
    ("st-mary", "St Elsewhere Imaging", "st-mary"),  # the PACS's own hospital wins over what the modality wrote
    ("", "northgate", "northgate"),
    ("", None, None),  # neither: no hospital (only a network-wide reader sees it)
])
def test_a_pacs_studys_hospital_is_the_pacss_own_else_its_institution(tmp_path: Path, configured: str,
                                                                      institution: str | None,
                                                                      hospital: str | None) -> None:
    assert fetched_hospital(tmp_path, configured, institution) == hospital


def test_the_demo_puts_its_pacs_in_a_hospital_its_doctor_reads(tmp_path: Path) -> None:
    script = (ROOT / "scripts" / "demo.sh").read_text()
    found = re.search(r'^export XRAYLAB_ORTHANC_HOSPITAL="\$\{XRAYLAB_ORTHANC_HOSPITAL:-([^}"]+)\}"$', script, re.M)
    assert found, "scripts/demo.sh configures the PACS's hospital (a value given in the environment wins)"
    assert script.index(found.group(0)) < script.index("xraylab demo"), "before the demo starts its pipeline"
    hospital = found.group(1)
    assert hospital in HOSPITALS, "the demo account reads HOSPITALS (serve_app.demo.ensure_demo_account)"
    settings = Settings(_env_file=None, STATE_DIR=tmp_path, ORTHANC_HOSPITAL=hospital)
    assert demo_pacs_hospitals(settings) == (hospital,), "the demo's PACS studies say so in their tags too"
    assert demo_pacs_hospitals(Settings(_env_file=None, STATE_DIR=tmp_path)) == HOSPITALS
    assert fetched_hospital(tmp_path, hospital, None) == hospital
