"""DICOM through the one preprocessing chain: every transfer syntax the project accepts gives the picture a JPEG
or PNG of it gives; windowing, rescale, VOI LUT and MONOCHROME1 as PS3.3 orders them; tags to study metadata;
and each kind of unsupported input refused with a reason that names it."""

from __future__ import annotations

import io
from datetime import date
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from ingest.dicom_files import TRANSFER_SYNTAXES, ModalityStudy, build_dataset, dicom_bytes
from xraylab.dicom import is_dicom, read_dataset, refuse_misnamed, tag_metadata, with_tags
from xraylab.errors import RejectedInputError
from xraylab.imaging import ImageLimits, InvalidImageError, inference_transforms, open_picture, picture_size
from xraylab.messages import FetchedObject, StudyMetadata
from xraylab.synthetic import encode_jpeg, generate_xray

LIMITS = ImageLimits(max_pixels=40_000_000, min_side=64, min_dynamic_range=12.0)
STUDY = ModalityStudy("P123456", "Chloé Moreau", date(2026, 11, 3), "st-mary", birth_date=date(1970, 1, 2))
TEST_FILES = Path(pydicom.__file__).parent / "data" / "test_files"  # shipped in the wheel, no download


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return generate_xray(np.random.default_rng(0), True)


def save(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(("syntax", "bits", "photometric"), [
    (syntax, bits, photometric) for syntax in TRANSFER_SYNTAXES for bits in (8, 16)
    for photometric in ("MONOCHROME2", "MONOCHROME1") if not (syntax == "jpeg-baseline" and bits == 16)])
def test_every_accepted_syntax_gives_the_picture_a_png_of_it_gives(pixels, syntax, bits, photometric) -> None:
    data = dicom_bytes(pixels, STUDY, syntax=syntax, bits=bits, photometric=photometric)
    assert is_dicom(data)
    chain = inference_transforms(None, LIMITS)
    out, want = chain(data), chain(png(pixels))
    lossy = syntax in ("jpeg2000", "jpeg-baseline")
    assert np.abs(out - want).max() <= (0.01 if lossy else 1e-6), "same picture, same model input"
    assert np.abs(out - chain(encode_jpeg(pixels))).mean() < 0.005, "and what its 8-bit JPEG gives"


def test_window_rescale_and_monochrome1_follow_the_standard(pixels) -> None:
    chain = inference_transforms(None, LIMITS)
    want = chain(png(pixels))
    # Stored values in CT-like units: HU = 2 * stored - 1000, with a window over the picture's HU range.
    ds = build_dataset(pixels, STUDY)
    ds.set_pixel_data(((pixels.astype(np.uint16) * 8 + 4 + 1000) // 2).astype(np.uint16), "MONOCHROME2", 12,
                      generate_instance_uid=False)
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1000
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 1020, 2040, "LINEAR_EXACT"  # HU 0..2040 -> 0..1
    assert np.abs(chain(save(ds)) - want).max() < 0.003
    ds.PhotometricInterpretation = "MONOCHROME1"
    assert np.abs(chain(save(ds)) - (1.0 - want)).max() < 0.003, "MONOCHROME1: low values are white"
    # A VOI LUT takes precedence over the window: here one that inverts.
    ds.PhotometricInterpretation = "MONOCHROME2"
    lut = pydicom.Dataset()
    lut.LUTDescriptor = [4096, 0, 12]
    lut.LUTData = (4095 - np.arange(4096)).astype(np.uint16).tobytes()
    lut["LUTData"].VR = "OW"
    ds.VOILUTSequence = pydicom.Sequence([lut])
    del ds.RescaleSlope, ds.RescaleIntercept  # the LUT reads stored values
    ds.set_pixel_data((pixels.astype(np.uint16) * 16 + 8), "MONOCHROME2", 12, generate_instance_uid=False)
    assert np.abs(chain(save(ds)) - (1.0 - want)).max() < 0.003


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                                  "MR_small_jpeg_ls_lossless.dcm", "MR_small_implicit.dcm", "MR_small_bigendian.dcm",
                                  "JPEG2000.dcm", "JPGExtended.dcm", "SC_rgb_jpeg_dcmtk.dcm", "image_dfl.dcm"])
def test_pydicoms_own_files_in_other_syntaxes_decode(name: str) -> None:
    data = (TEST_FILES / name).read_bytes()
    out = inference_transforms(None, None)(data)
    assert out.shape == (150, 150, 1) and out.dtype == np.float32
    assert 0.0 <= out.min() < out.max() <= 1.0


def unsupported_syntax(pixels: np.ndarray) -> bytes:
    from pydicom.encaps import encapsulate
    from pydicom.uid import MPEG2MPML

    ds = build_dataset(pixels, STUDY)
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(64)])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    return save(ds)


@pytest.mark.parametrize(("case", "reason", "named"), [
    ("rtplan", "not_image_dicom", "RT Plan Storage"),
    ("report", "not_image_dicom", "Basic Text SR Storage"),
    ("multiframe", "multi_frame", "15 frames"),
    ("mpeg2", "unsupported_transfer_syntax", "MPEG2 Main Profile"),
    ("truncated", "not_image", "pixel data does not decode"),
    ("no_preamble", "not_image", "DICOM Part 10"),
])
def test_unsupported_input_is_refused_naming_what(pixels, case: str, reason: str, named: str) -> None:
    data = {
        "rtplan": lambda: (TEST_FILES / "rtplan.dcm").read_bytes(),
        "report": lambda: (TEST_FILES / "reportsi.dcm").read_bytes(),
        "multiframe": lambda: (TEST_FILES / "rtdose.dcm").read_bytes(),
        "mpeg2": lambda: unsupported_syntax(pixels),
        "truncated": lambda: dicom_bytes(pixels, STUDY)[:-5000],
        "no_preamble": lambda: (TEST_FILES / "no_meta.dcm").read_bytes(),
    }[case]()
    with pytest.raises(InvalidImageError) as caught:
        inference_transforms(None, LIMITS)(data)
    assert caught.value.reason == reason
    assert named in str(caught.value)


def test_limits_refuse_a_huge_dicom_from_its_header(pixels) -> None:
    data = dicom_bytes(pixels, STUDY)
    with pytest.raises(InvalidImageError) as caught:
        inference_transforms(None, ImageLimits(max_pixels=224 * 100, min_side=64, min_dynamic_range=12))(data)
    assert caught.value.reason == "too_many_pixels"
    assert picture_size(data) == (224, 224)


def test_a_file_named_or_typed_dicom_that_is_not_is_refused_as_not_dicom(pixels) -> None:
    jpeg = encode_jpeg(pixels)
    for name, media in (("chest.dcm", None), ("CHEST.DICOM", None), ("chest", "application/dicom")):
        with pytest.raises(InvalidImageError) as caught:
            refuse_misnamed(jpeg, name, media)
        assert caught.value.reason == "not_dicom"
    refuse_misnamed(jpeg, "chest.jpeg", "image/jpeg")
    refuse_misnamed(dicom_bytes(pixels, STUDY), "chest.dcm", "application/dicom")
    with pytest.raises(RejectedInputError) as rejected:
        with_tags(FetchedObject(jpeg, None, "application/octet-stream", key="a/b.dcm"))
    assert rejected.value.reason == "not_dicom"


def test_the_tags_become_the_study_metadata(pixels) -> None:
    data = dicom_bytes(pixels, STUDY, syntax="rle")
    ds = read_dataset(data, header_only=True)
    assert "PixelData" not in ds
    meta = tag_metadata(ds)
    assert meta == StudyMetadata(hospital="st-mary", patient_id="P123456", patient_name="Chloé Moreau",
                                 study_date="2026-11-03", study_instance_uid=ds.StudyInstanceUID, modality="DX",
                                 view_position="PA", manufacturer="xraylab simulated modality", patient_sex="O",
                                 patient_age="056Y", study_description="XR CHEST PA")
    # Fetched from S3: the sending site's header names the hospital; the tags name the patient.
    fetched = with_tags(FetchedObject(data, "e", "application/dicom", StudyMetadata("northgate", "X", "Y", "Z"),
                                      key="k.dcm"))
    assert (fetched.metadata.hospital, fetched.metadata.patient_id) == ("northgate", "P123456")
    jpeg = FetchedObject(encode_jpeg(pixels), "e", "image/jpeg", StudyMetadata("northgate", "X"), key="k.jpeg")
    assert with_tags(jpeg) is jpeg


def _tags(**values: str) -> pydicom.Dataset:
    """A header with only the tags given (what a modality may leave out, it leaves out here)."""
    ds = pydicom.Dataset()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def test_sex_age_and_description_come_from_their_tags() -> None:
    meta = tag_metadata(_tags(PatientSex="F", PatientAge="034Y", PatientBirthDate="19500101", StudyDate="20261103",
                              StudyDescription="  CHEST PA\t "))
    assert (meta.patient_sex, meta.patient_age, meta.study_description) == ("F", "034Y", "CHEST PA"), \
        "PatientAge wins over the birth date; the description's control characters dropped"
    long = tag_metadata(_tags(StudyDescription="X" * 100))
    assert long.study_description == "X" * 64


@pytest.mark.parametrize(("birth", "study", "age"), [
    ("19700102", "20261103", "056Y"), ("19700102", "20260101", "055Y"),  # the day before the birthday: not yet
    ("20250203", "20261103", "021M"), ("20261001", "20261103", "001M"), ("20261020", "20261103", "002W"),
    ("20261031", "20261103", "003D"),
])
def test_the_age_is_the_birth_date_at_the_study_date_where_patient_age_is_absent(birth: str, study: str,
                                                                                 age: str) -> None:
    assert tag_metadata(_tags(PatientBirthDate=birth, StudyDate=study)).patient_age == age
    assert tag_metadata(_tags(PatientAge="", PatientBirthDate=birth, StudyDate=study)).patient_age == age


@pytest.mark.parametrize("tags", [{"PatientBirthDate": "19700102"}, {"StudyDate": "20261103"},
                                  {"PatientBirthDate": "19701302", "StudyDate": "20261103"},
                                  {"PatientBirthDate": "20270101", "StudyDate": "20261103"},
                                  {"PatientAge": "old", "StudyDate": "20261103"}])
def test_no_age_is_made_up(tags: dict[str, str]) -> None:
    assert tag_metadata(_tags(**tags)).patient_age is None


@pytest.mark.parametrize(("tag", "sex"), [("M", "M"), ("f ", "F"), ("O", "O"), ("X", None), ("", None),
                                          ("MALE", "M")])
def test_patient_sex_is_m_f_or_o(tag: str, sex: str | None) -> None:
    assert tag_metadata(_tags(PatientSex=tag)).patient_sex == sex


def test_an_upload_s_metadata_fills_what_the_tags_leave_out() -> None:
    fallback = StudyMetadata("st-mary", patient_sex="M", patient_age="040Y", study_description="From S3")
    assert tag_metadata(_tags(PatientID="P1"), fallback).patient_sex == "M"
    meta = tag_metadata(_tags(PatientSex="F", PatientAge="041Y", StudyDescription="From tags"), fallback)
    assert (meta.patient_sex, meta.patient_age, meta.study_description) == ("F", "041Y", "From tags")


def test_the_generated_modality_writes_sex_and_description(pixels) -> None:
    study = ModalityStudy("P1", "Ana Okafor", date(2026, 11, 4), "st-mary", birth_date=date(1990, 11, 5), sex="F",
                          description="XR CHEST 1 VIEW")
    meta = tag_metadata(read_dataset(dicom_bytes(pixels, study), header_only=True))
    assert (meta.patient_sex, meta.patient_age, meta.study_description) == ("F", "035Y", "XR CHEST 1 VIEW")


def test_burned_in_text_shows_in_the_picture_people_see(pixels) -> None:
    plain = np.asarray(open_picture(dicom_bytes(pixels, STUDY)), np.float32)
    burned = np.asarray(open_picture(dicom_bytes(pixels, STUDY, burn_in=True)), np.float32)
    band = int(224 * 0.12)
    assert np.abs(burned[:band] - plain[:band]).max() > 100, "the text is in the top band"
    assert np.array_equal(burned[band:], plain[band:]), "and nowhere else"


def test_a_frame_bigger_than_its_header_says_is_refused_before_it_is_decoded(pixels) -> None:
    from pydicom.encaps import encapsulate

    big = np.tile(pixels, (8, 8))  # 1792 x 1792 pixels inside a file whose header says 224 x 224
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, "JPEG", quality=50)
    ds = pydicom.dcmread(io.BytesIO(dicom_bytes(pixels, STUDY, syntax="jpeg-baseline")))
    ds.PixelData = encapsulate([buf.getvalue()])
    with pytest.raises(InvalidImageError, match="the compressed frame is 1792x1792 pixels, the header says 224x224"):
        inference_transforms(None, LIMITS)(save(ds))
    for syntax in ("jpeg-baseline", "jpeg2000", "jpeg2000-lossless"):  # an honest frame passes the same check
        inference_transforms(None, LIMITS)(dicom_bytes(pixels, STUDY, syntax=syntax))


@pytest.mark.parametrize(("attribute", "value"), [("WindowWidth", "NaN"), ("WindowWidth", 0), ("RescaleSlope", "nan"),
                                                  ("WindowCenter", "inf")])
def test_windows_and_rescales_that_give_no_picture_are_refused(pixels, attribute: str, value) -> None:
    ds = build_dataset(pixels, STUDY, bits=16)
    ds.RescaleIntercept = 0  # a slope counts with its intercept
    setattr(ds, attribute, value)
    with pytest.raises(InvalidImageError) as caught:
        inference_transforms(None, LIMITS)(save(ds))
    assert caught.value.reason == "unsupported_dicom"


def test_presentation_lut_shape_inverse_inverts_a_monochrome2_image(pixels) -> None:
    chain = inference_transforms(None, LIMITS)
    ds = build_dataset(pixels, STUDY)
    ds.PresentationLUTShape = "INVERSE"
    assert np.abs(chain(save(ds)) - (1.0 - chain(png(pixels)))).max() < 1e-6


def test_corrupt_files_are_refused_never_raised(pixels) -> None:
    """Truncated and bit-flipped files in every syntax: refused with a reason or decoded, nothing else."""
    rng = np.random.default_rng(17)
    sources = [dicom_bytes(pixels, STUDY, syntax=s) for s in TRANSFER_SYNTAXES]
    sources += [(TEST_FILES / name).read_bytes() for name in ("MR_small_RLE.dcm", "JPEG2000.dcm", "image_dfl.dcm",
                                                              "MR_small_jpeg_ls_lossless.dcm")]
    chain = inference_transforms(None, LIMITS)
    refused = 0
    for data in sources:
        for trial in range(30):
            mutated = bytearray(data)
            if trial % 3 == 0:
                mutated = mutated[:int(rng.integers(132, len(data)))]
            else:
                for at in rng.integers(132, len(data), size=int(rng.integers(1, 8))):
                    mutated[at] = int(rng.integers(0, 256))
            try:
                out = chain(bytes(mutated))
            except InvalidImageError as exc:
                refused += 1
                assert exc.reason in {"not_image", "unsupported_dicom", "unsupported_transfer_syntax", "multi_frame",
                                      "not_image_dicom", "too_many_pixels", "not_radiograph"}
                continue
            assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    assert refused > 50, "the mutations do break files"


def test_one_picture_in_five_syntaxes_decodes_alike() -> None:
    """pydicom's MR_small in explicit and implicit VR, big endian, RLE, JPEG 2000 and JPEG-LS lossless."""
    chain = inference_transforms(None, None)
    reference = chain((TEST_FILES / "MR_small.dcm").read_bytes())
    for name in ("MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                 "MR_small_jpeg_ls_lossless.dcm"):
        assert np.abs(chain((TEST_FILES / name).read_bytes()) - reference).max() < 1e-6, name
