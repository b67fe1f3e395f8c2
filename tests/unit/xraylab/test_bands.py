import pytest

from xraylab.bands import NORMAL, PNEUMONIA, UNSURE, Bands


@pytest.mark.parametrize("score, band", [(0.95, PNEUMONIA), (0.8, UNSURE), (0.6, UNSURE), (0.59, NORMAL)])
def test_bands(score: float, band: str) -> None:
    assert Bands().band(score) == band


def test_bad_bands() -> None:
    with pytest.raises(ValueError):
        Bands(pneumonia=0.5, unsure=0.7)


def test_bands_of_a_card() -> None:
    bands = Bands.from_card({"pneumonia": 0.9, "unsure": 0.4})
    assert (bands.band(0.95), bands.band(0.5), bands.band(0.3)) == (PNEUMONIA, UNSURE, NORMAL)
    assert Bands.from_card(bands.to_dict()) == bands
