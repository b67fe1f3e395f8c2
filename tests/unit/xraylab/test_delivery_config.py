"""The delivery settings file (xraylab/delivery_config.py): routes per hospital, and a clear error for each mistake."""

from __future__ import annotations

import pytest

from xraylab.delivery_config import DeliveryConfig, DeliveryConfigError

GOOD = """
[pacs.main]
ae_title = "PACS1"
host = "pacs.example"
port = 104

[ris.north]
host = "ris.example"
port = 2575
receiving_facility = "NORTHGATE"

[hospitals.northgate]
pacs = "main"
ris = "north"
"""


def test_a_hospital_gets_its_ris_and_its_pacs_for_pacs_studies_only(tmp_path) -> None:
    path = tmp_path / "delivery.toml"
    path.write_text(GOOD)
    config = DeliveryConfig.load(path, calling_ae_title="XRAYLAB_RES")
    assert [d.id for d in config.destinations("northgate", from_pacs=True)] == ["pacs/main", "ris/north"]
    assert [d.id for d in config.destinations("northgate", from_pacs=False)] == ["ris/north"]
    assert config.destinations("southgate", from_pacs=True) == []  # none configured: no delivery, no error
    assert config.destinations(None, from_pacs=True) == []
    assert config.destination("pacs/main").calling_ae_title == "XRAYLAB_RES"
    assert config.destination("ris/north").receiving_facility == "NORTHGATE"
    assert config.destination("ris/gone") is None
    assert DeliveryConfig.load(None).empty


@pytest.mark.parametrize(("text", "says"), [
    (GOOD + '\n[hospitals.south]\nris = "nowhere"\n', "'nowhere' is not a [ris.<name>]"),
    (GOOD.replace("port = 104", "port = 70000"), "port must be"),
    (GOOD.replace('"PACS1"', '"A_VERY_LONG_AE_TITLE"'), "AE title"),
    (GOOD.replace('"NORTHGATE"', '"NORTH|GATE"'), "HL7 names"),
    (GOOD + "\n[extra]\n", "unknown sections"),
    ("[pacs\n", "cannot be read"),
    (GOOD.replace("[ris.north]", "[ris." + "n" * 65 + "]").replace('ris = "north"', 'ris = "' + "n" * 65 + '"'),
     "1 to 64 printable characters"),
    (GOOD.replace("port = 2575", 'port = 2575\ntimeout_s = "soon"'), "timeout_s must be a number"),
    (GOOD.replace('ris = "north"', 'ris = ["north"]'), "only pacs ="),
])
def test_each_mistake_is_named(tmp_path, text: str, says: str) -> None:
    path = tmp_path / "delivery.toml"
    path.write_text(text)
    with pytest.raises(DeliveryConfigError, match=says.replace("[", r"\[").replace("|", r"\|")):
        DeliveryConfig.load(path)
