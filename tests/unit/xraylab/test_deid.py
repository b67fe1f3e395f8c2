"""De-identification (PS3.15 Annex E basic profile, modified dates, clean pixel data) of generated chest DX datasets:
no identifier survives anywhere, only what the table lists or the keep-list names is kept, UIDs / pseudonyms / date
shifts are keyed and stable and pseudonyms are per (issuer, id), date-times lose their UTC offset, the text band is
blurred and nothing else, the output is a valid Part 10 file (dciodvfy finds nothing new in it), compressed input
comes out uncompressed. Every image goes through OCR (Tesseract): these tests fail without it, as the export
would refuse to run; the real-film OCR tests are in test_deid_ocr.py."""

from __future__ import annotations

import copy
import io
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import date, datetime, timedelta

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from pydicom import DataElement, Dataset, Sequence, dcmread
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)
from scipy import ndimage

from xraylab.deid import (
    KEPT_ATTRIBUTES,
    DeidPolicy,
    DeidRefused,
    FractionalRegion,
    Region,
    TextRule,
    blur_regions,
    date_shift_days,
    deidentify,
    profile_action,
    pseudonym,
    remap_uid,
)
from xraylab.deid_pixels import SIMULATED_MANUFACTURER

KEY = b"research-export-key-1"
HOSPITAL = "st-elsewhere"  # the hospital the studies came from: the issuer of their Patient IDs
# The rule a site would add for its ACME devices: their text sits in the top band (the default rules cover only
# the project's simulated modality).
ACME_BAND = (TextRule(regions=(FractionalRegion(0.0, 0.0, 1.0, 0.12),), manufacturer="acme"),)
POLICY = DeidPolicy(key=KEY, text_rules=ACME_BAND)
CR_CLASS = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
PATIENT = {"name": "DOE^JANE", "id": "PID-12345", "birth": "19600101"}
BAND_ROWS = 31  # ceil(0.12 * 256): the default rule's band


def burned_picture(size: int = 256, bits: int = 12) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smooth radiograph-like background, the same with the patient's name and id burned into the top band
    in white, and the mask of the text's pixels."""
    top = 2 ** bits - 1
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    background = np.rint(top * (0.2 + 0.5 * xx / size + 0.2 * yy / size)).astype(np.uint16 if bits > 8 else np.uint8)
    canvas = Image.new("L", (size, size))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=9)
    for i, line in enumerate([PATIENT["name"], "ID " + PATIENT["id"], "1960-01-01"]):
        draw.text((4, 2 + i * 9), line, fill=255, font=font)
    mask = np.asarray(canvas) > 0
    assert mask.any() and not mask[BAND_ROWS:].any()
    burned = background.copy()
    burned[mask] = top
    return background, burned, mask


def chest(study_uid: str | None = None, *, patient_id: str = PATIENT["id"], bits: int = 12,
          photometric: str = "MONOCHROME2", burn: bool = True) -> FileDataset:
    """A CR chest dataset as a modality writes it: identifiers in the tags, a private tag, an overlay, a source
    image reference, and (``burn``) the name and id burned into the pixels."""
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CR_CLASS, sop_uid
    meta.TransferSyntaxUID, meta.ImplementationClassUID = ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID
    meta.SourceApplicationEntityTitle = "XR-ROOM-3"
    ds = FileDataset("/data/DOE_JANE/img.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID, ds.SOPInstanceUID = CR_CLASS, sop_uid
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid or generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT["name"], patient_id, PATIENT["birth"]
    ds.PatientSex, ds.PatientAge, ds.PatientAddress = "F", "064Y", "1 Main Street, Springfield"
    ds.OtherPatientIDs = "MRN-777"
    ds.OtherPatientIDsSequence = Sequence([Dataset()])
    ds.OtherPatientIDsSequence[0].PatientID = "MRN-777"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.Manufacturer = "ACME Imaging"
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20240315"
    ds.StudyTime, ds.AcquisitionDateTime = "101500", "20240315101500.000000"
    ds.InstitutionName, ds.InstitutionAddress = "St Elsewhere Hospital", "2 Hospital Road"
    ds.ReferringPhysicianName, ds.OperatorsName = "HOUSE^GREGORY", "SMITH^OPERATOR"
    ds.AccessionNumber, ds.StationName, ds.StudyID = "ACC998877", "XR-ROOM-3", "S-4711"
    ds.StudyDescription = "Chest PA for Jane Doe"
    ds.SourceImageSequence = Sequence([Dataset()])
    source = ds.SourceImageSequence[0]
    source.ReferencedSOPClassUID, source.ReferencedSOPInstanceUID = CR_CLASS, generate_uid()
    source.add_new(0x00081160, "IS", 1)  # Referenced Frame Number: not a UID, dropped from a U* item
    ds.private_block(0x0009, "ACME 1.0", create=True).add_new(0x01, "LO", PATIENT["name"] + " " + PATIENT["id"])
    ds.add_new(0x60000010, "US", 256)  # an overlay plane (Overlay Rows ... Overlay Data)
    ds.add_new(0x60000011, "US", 256)
    ds.add_new(0x60003000, "OW", np.zeros(256 * 256 // 8, np.uint8).tobytes())
    ds.BurnedInAnnotation = "YES" if burn else "NO"
    background, burned, _ = burned_picture(bits=bits)
    burned = burned if burn else background
    if photometric == "MONOCHROME1":
        burned = (2 ** bits - 1) - burned
    ds.set_pixel_data(burned, photometric, bits, generate_instance_uid=False)
    return ds


def identifying_uids(ds: Dataset) -> set[str]:
    return {ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, ds.FrameOfReferenceUID,
            ds.file_meta.MediaStorageSOPInstanceUID, ds.SourceImageSequence[0].ReferencedSOPInstanceUID}


def walk(ds: Dataset) -> Iterator[DataElement]:
    """Every element: the file meta's, the dataset's, and those inside sequence items at any depth."""
    for elem in [*getattr(ds, "file_meta", Dataset()), *ds]:
        yield elem
        if elem.VR == "SQ":
            for item in elem.value:
                yield from walk(item)


def texts(elem: DataElement) -> list[str]:
    values = elem.value if elem.VM > 1 else [elem.value]
    return [str(v) for v in values if v is not None and not isinstance(v, bytes | Dataset)]


def band(ds: Dataset) -> np.ndarray:
    return get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds)[0].astype(np.float64)


def test_no_identifier_survives_anywhere() -> None:
    ds = chest()
    out = deidentify(ds, POLICY, hospital=HOSPITAL)
    secrets = {PATIENT["name"], PATIENT["id"], PATIENT["birth"], "MRN-777", "HOUSE^GREGORY", "ACC998877",
               "St Elsewhere Hospital", "XR-ROOM-3", "1 Main Street", "Jane Doe"} | identifying_uids(ds)
    found = [(elem.tag, secret) for elem in walk(out) for secret in secrets
             if any(secret in text for text in texts(elem))
             or (isinstance(elem.value, bytes) and secret.encode() in elem.value)]
    assert not found
    assert not getattr(out, "filename", None)  # the source path (here with the name in it) is not carried


def test_attributes_follow_the_profile() -> None:
    ds = chest()
    out = deidentify(ds, POLICY, hospital=HOSPITAL)
    assert profile_action(0x00100010) == "Z" and profile_action(0x0020000D) == "U"  # the table is loaded
    assert profile_action(0x60003000) == profile_action(0x60023000) == "X" and profile_action(0x00080016) is None
    assert out.PatientIdentityRemoved == "YES" and out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert out.DeidentificationMethod[0].startswith("PS3.15 E.1 Basic")
    assert all(len(value) <= 64 for value in out.DeidentificationMethod)  # LO
    assert [(item.CodeValue, item.CodingSchemeDesignator) for item in out.DeidentificationMethodCodeSequence] == [
        ("113100", "DCM"), ("113107", "DCM"), ("113101", "DCM")]
    assert out.BurnedInAnnotation == "NO"
    for keyword in ("PatientBirthDate", "InstitutionName", "ReferringPhysicianName", "AccessionNumber",
                    "StationName", "OperatorsName", "StudyID", "PatientSex"):  # Z: present and empty
        assert keyword in out and not out[keyword].value, keyword
    for keyword in ("PatientAddress", "OtherPatientIDs", "OtherPatientIDsSequence", "InstitutionAddress",
                    "StudyDescription", "PatientAge"):  # X: removed
        assert keyword not in out, keyword
    assert not any(elem.tag.is_private or elem.tag.group & 0xFF00 == 0x6000 for elem in walk(out))
    assert "SourceApplicationEntityTitle" not in out.file_meta
    assert (out.SOPClassUID, out.Modality, out.BodyPartExamined, out.ViewPosition, out.Manufacturer) == (
        CR_CLASS, "CR", "CHEST", "PA", "ACME Imaging")
    assert out.StudyTime == "101500"  # times kept: dates move by whole days
    source = out.SourceImageSequence[0]  # X/Z/U*: the item keeps its UIDs, remapped but for the class
    assert set(source.keys()) == {0x00081150, 0x00081155}
    assert source.ReferencedSOPClassUID == CR_CLASS
    assert source.ReferencedSOPInstanceUID == remap_uid(ds.SourceImageSequence[0].ReferencedSOPInstanceUID, KEY)


def test_the_input_is_left_as_it_was() -> None:
    ds = chest()
    before = copy.deepcopy(ds)
    deidentify(ds, POLICY, hospital=HOSPITAL)
    assert ds == before and ds.file_meta == before.file_meta
    assert getattr(ds, "_pixel_array", None) is None  # not even pydicom's decoded-pixel cache


def test_uids_are_remapped_consistently_and_irreversibly() -> None:
    study = generate_uid()
    first, second = chest(study), chest(study)
    one, two = deidentify(first, POLICY, hospital=HOSPITAL), deidentify(second, POLICY, hospital=HOSPITAL)
    other = deidentify(first, DeidPolicy(key=b"another-key", text_rules=ACME_BAND), hospital=HOSPITAL)
    assert one.StudyInstanceUID == two.StudyInstanceUID == remap_uid(study, KEY) != study
    assert other.StudyInstanceUID != one.StudyInstanceUID
    assert one.SeriesInstanceUID != two.SeriesInstanceUID and one.SOPInstanceUID != two.SOPInstanceUID
    assert deidentify(first, POLICY, hospital=HOSPITAL).SOPInstanceUID == one.SOPInstanceUID  # the same across exports
    assert one.file_meta.MediaStorageSOPInstanceUID == one.SOPInstanceUID
    assert one.file_meta.MediaStorageSOPClassUID == CR_CLASS
    for uid in (one.StudyInstanceUID, one.SeriesInstanceUID, one.SOPInstanceUID, one.FrameOfReferenceUID):
        assert re.fullmatch(r"2\.25\.(0|[1-9][0-9]*)", uid) and len(uid) <= 64 and UID(uid).is_valid
    assert remap_uid(study + "\0", KEY) == remap_uid(study, KEY)  # UI padding is not part of the UID


def test_pseudonym_is_stable_and_keyed() -> None:
    out = deidentify(chest(), POLICY, hospital=HOSPITAL)
    expected = pseudonym(PATIENT["id"], KEY, issuer=HOSPITAL)
    assert out.PatientID == str(out.PatientName) == expected
    assert re.fullmatch(r"[0-9a-f]{32}", expected)
    assert pseudonym(PATIENT["id"] + " ", KEY, issuer=HOSPITAL) == expected  # LO padding
    assert pseudonym(PATIENT["id"], b"another-key", issuer=HOSPITAL) != expected
    assert expected != pseudonym("PID-12346", KEY, issuer=HOSPITAL)


def test_pseudonyms_and_shifts_are_per_issuer_and_patient_id() -> None:
    """Record PID-12345 of two hospitals is two research subjects (two pseudonyms, two date shifts); the same
    hospital and id is one subject across exports; an Issuer of Patient ID in the file wins over the hospital."""
    study = date(2024, 3, 15)
    a1, a2 = (deidentify(chest(), POLICY, hospital="st-mary") for _ in range(2))
    b = deidentify(chest(), POLICY, hospital="riverside")
    assert a1.PatientID == a2.PatientID == pseudonym(PATIENT["id"], KEY, issuer="st-mary")
    assert b.PatientID == pseudonym(PATIENT["id"], KEY, issuer="riverside") != a1.PatientID
    shift_a, shift_b = (date_shift_days(PATIENT["id"], KEY, 365, issuer=h) for h in ("st-mary", "riverside"))
    assert shift_a != shift_b  # (for this key and id: 1 chance in 365 to be equal by construction)
    assert a1.StudyDate == a2.StudyDate == (study + timedelta(days=shift_a)).strftime("%Y%m%d")
    assert b.StudyDate == (study + timedelta(days=shift_b)).strftime("%Y%m%d") != a1.StudyDate
    # pairs that would run together if issuer and id were only concatenated stay apart
    assert pseudonym("1", KEY, issuer="ab") != pseudonym("b1", KEY, issuer="a")
    # the file's issuer, wherever it is sent from: one subject; and it is not exported (table: X)
    issued = chest()
    issued.IssuerOfPatientID = "MRN-ST-MARY"
    c, d = (deidentify(issued, POLICY, hospital=h) for h in ("st-mary", "riverside"))
    assert c.PatientID == d.PatientID == pseudonym(PATIENT["id"], KEY, issuer="MRN-ST-MARY")
    assert "IssuerOfPatientID" not in c
    # no issuer at all: refused, not pooled with every other hospital's record numbers
    for hospital in (None, "", "  "):
        with pytest.raises(DeidRefused, match="issuer") as refused:
            deidentify(chest(), POLICY, hospital=hospital)
        assert refused.value.reason == "no_issuer"


def test_dates_shift_by_the_patients_days() -> None:
    shifts = {date_shift_days(f"patient-{i}", KEY, 30, issuer=HOSPITAL) for i in range(300)}
    assert shifts <= set(range(-30, 0)) and len(shifts) > 20  # never 0, spread over the range
    days = date_shift_days(PATIENT["id"], KEY, 365, issuer=HOSPITAL)
    assert days == date_shift_days(PATIENT["id"], KEY, 365, issuer=HOSPITAL)
    a, b = deidentify(chest(), POLICY, hospital=HOSPITAL), deidentify(chest(), POLICY, hospital=HOSPITAL)
    expected = (date(2024, 3, 15) + timedelta(days=days)).strftime("%Y%m%d")
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        assert a[keyword].value == b[keyword].value == expected
    datetime.strptime(a.StudyDate, "%Y%m%d")
    assert a.AcquisitionDateTime == expected + "101500.000000"
    other = deidentify(chest(patient_id="PID-99999"), POLICY, hospital=HOSPITAL)
    assert other.StudyDate == (date(2024, 3, 15) + timedelta(
        days=date_shift_days("PID-99999", KEY, 365, issuer=HOSPITAL))).strftime("%Y%m%d")


def test_date_times_lose_their_utc_offset() -> None:
    """A DT's &ZZXX and Timezone Offset From UTC say where the patient was: removed, the date still shifted."""
    ds = chest(burn=False)
    ds.AcquisitionDateTime = "20240315101500.000000+0100"
    ds.FrameAcquisitionDateTime = ["20240315101500-0530", "20240315"]  # multi-valued; date only
    ds.TimezoneOffsetFromUTC = "+0100"
    ds.SourceImageSequence[0].add_new(0x0008002A, "DT", "20240314235959+1245")  # in an item: not a UID, dropped
    out = deidentify(ds, POLICY, hospital=HOSPITAL)
    day = (date(2024, 3, 15) + timedelta(days=date_shift_days(PATIENT["id"], KEY, 365, issuer=HOSPITAL)))
    assert out.AcquisitionDateTime == day.strftime("%Y%m%d") + "101500.000000"
    assert list(out.FrameAcquisitionDateTime) == [day.strftime("%Y%m%d") + "101500", day.strftime("%Y%m%d")]
    assert "TimezoneOffsetFromUTC" not in out
    offsets = [elem.tag for elem in walk(out) for text in texts(elem) if re.search(r"[+-](0100|0530|1245)\b", text)]
    assert not offsets


def test_bad_keys_and_inputs_are_refused() -> None:
    for call in (lambda: DeidPolicy(key=b""), lambda: pseudonym("x", b"", issuer=HOSPITAL),
                 lambda: remap_uid("1.2", b""), lambda: date_shift_days("x", b"", 10, issuer=HOSPITAL),
                 lambda: DeidPolicy(key=KEY, max_shift_days=0), lambda: date_shift_days("", KEY, 10, issuer=HOSPITAL),
                 lambda: pseudonym("x", KEY, issuer="")):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError, match="Patient ID"):
        deidentify(chest(patient_id=""), POLICY, hospital=HOSPITAL)
    # The header says there is burned-in text; neither a rule nor OCR finds any (here: none is there to find):
    # refused, since text OCR cannot read is not text nobody can.
    says_so = chest(burn=False)
    says_so.BurnedInAnnotation = "YES"
    elsewhere = DeidPolicy(key=KEY, text_rules=(TextRule(regions=(Region(0, 0, 10, 10),), manufacturer="Other"),))
    with pytest.raises(DeidRefused, match="burned-in") as refused:
        deidentify(says_so, elsewhere, hospital=HOSPITAL)
    assert refused.value.reason == "burned_in_text"
    # Text burned in where no rule looks (the default rules know only the simulated modality): OCR finds it
    out = deidentify(chest(), DeidPolicy(key=KEY), hospital=HOSPITAL)
    assert "Clean Pixel Data" in out.DeidentificationMethod and out.BurnedInAnnotation == "NO"
    assert (band(out)[:BAND_ROWS] != band(chest())[:BAND_ROWS]).any()
    simulated = chest()
    simulated.Manufacturer = SIMULATED_MANUFACTURER
    assert "Clean Pixel Data" in deidentify(simulated, DeidPolicy(key=KEY), hospital=HOSPITAL).DeidentificationMethod


def test_blur_regions_changes_only_the_regions() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, (64, 80), dtype=np.uint16)
    out = blur_regions(pixels, [Region(10, 5, 30, 20), Region(70, 60, 50, 50)])  # the second one clipped
    inside = np.zeros(pixels.shape, bool)
    inside[5:25, 10:40] = inside[60:, 70:] = True
    assert out.dtype == pixels.dtype and np.array_equal(out[~inside], pixels[~inside])
    assert out[inside].std() < 0.3 * pixels[inside].std()
    assert FractionalRegion(0, 0, 1, 0.12).to_pixels(256, 200) == Region(0, 0, 200, BAND_ROWS)
    frames = np.stack([pixels, pixels])
    region = [Region(10, 5, 30, 20)]
    assert np.array_equal(blur_regions(frames, region)[1], blur_regions(pixels, region))


def high_pass(picture: np.ndarray) -> np.ndarray:
    return picture - ndimage.gaussian_filter(picture, 1.5)


@pytest.mark.parametrize(("bits", "photometric"), [(12, "MONOCHROME2"), (8, "MONOCHROME1"), (16, "MONOCHROME2")])
def test_burned_in_text_is_blurred_and_nothing_else(bits: int, photometric: str) -> None:
    ds = chest(bits=bits, photometric=photometric)
    out = deidentify(ds, POLICY, hospital=HOSPITAL)
    assert (out.BitsAllocated, out.BitsStored, out.PixelRepresentation) == (ds.BitsAllocated, bits, 0)
    assert out.PhotometricInterpretation == photometric
    before, after = band(ds), band(out)
    assert np.array_equal(before[BAND_ROWS:], after[BAND_ROWS:])
    background, _, mask = burned_picture(bits=bits)
    if photometric == "MONOCHROME1":
        background = (2 ** bits - 1) - background
    text, rest = mask[:BAND_ROWS], ~mask[:BAND_ROWS]
    residual_before, residual_after = (x[:BAND_ROWS] - background[:BAND_ROWS] for x in (before, after))
    # the strokes and letter shapes (the high frequencies) are gone: down by more than 99% ...
    assert (high_pass(after[:BAND_ROWS]) ** 2).sum() < 0.01 * (high_pass(before[:BAND_ROWS]) ** 2).sum()
    # ... and the text pixels no longer stand out from the band around them (a faint smudge at most)
    contrast_before = residual_before[text].mean() - residual_before[rest].mean()
    contrast_after = residual_after[text].mean() - residual_after[rest].mean()
    assert abs(contrast_after) < 0.3 * abs(contrast_before)


def test_rules_pick_regions_by_the_dataset() -> None:
    ds = chest(burn=False)  # no text: what changes is the rule's doing
    corner = TextRule(regions=(Region(0, 0, 64, 16),), manufacturer="acme", rows=256)
    out = deidentify(ds, DeidPolicy(key=KEY, text_rules=(corner,)), hospital=HOSPITAL)
    before, after = band(ds), band(out)
    assert not np.array_equal(before[:16, :64], after[:16, :64])
    assert np.array_equal(before[:, 64:], after[:, 64:]) and np.array_equal(before[16:], after[16:])
    untouched = deidentify(ds, DeidPolicy(key=KEY, text_rules=(TextRule(regions=corner.regions, rows=512),)),
                           hospital=HOSPITAL)
    assert np.array_equal(band(untouched), before)  # no rule matched, no text read: pixels as they were
    # ... and still Clean Pixel Data: OCR looked at every pixel and found nothing to clean
    assert [item.CodeValue for item in untouched.DeidentificationMethodCodeSequence] == ["113100", "113107", "113101"]


def saved(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return dcmread(io.BytesIO(buffer.getvalue()))


def test_output_saves_as_a_part10_file_and_reads_back() -> None:
    out = deidentify(chest(), POLICY, hospital=HOSPITAL)
    back = saved(out)
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID == out.SOPInstanceUID
    assert (back.PatientID, back.StudyDate, back.StudyInstanceUID) == (out.PatientID, out.StudyDate,
                                                                       out.StudyInstanceUID)
    assert np.array_equal(back.pixel_array, band(out))


def jpeg_baseline(ds: Dataset) -> None:
    buffer = io.BytesIO()
    Image.fromarray(ds.pixel_array).save(buffer, "JPEG", quality=95)
    ds.PixelData = encapsulate([buffer.getvalue()])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit


@pytest.mark.parametrize(("syntax", "bits"), [(RLELossless, 12), (JPEG2000Lossless, 12), (JPEGBaseline8Bit, 8)])
def test_compressed_input_comes_out_uncompressed(syntax: UID, bits: int) -> None:
    ds = chest(bits=bits)
    if syntax == JPEGBaseline8Bit:
        jpeg_baseline(ds)
    else:
        ds.compress(syntax, generate_instance_uid=False)
    assert ds.file_meta.TransferSyntaxUID == syntax
    out = deidentify(ds, POLICY, hospital=HOSPITAL)
    back = saved(out)
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian and not back["PixelData"].is_undefined_length
    assert (back.BitsAllocated, back.BitsStored, back.Rows, back.Columns) == (ds.BitsAllocated, bits, 256, 256)
    decoded = band(ds)
    assert np.array_equal(back.pixel_array[BAND_ROWS:], decoded[BAND_ROWS:])
    assert not np.array_equal(back.pixel_array[:BAND_ROWS], decoded[:BAND_ROWS])


def test_identifiers_the_table_does_not_list_are_removed_too() -> None:
    ds = chest()
    ds.PatientBirthDateInAlternativeCalendar = "5720 Tishri 1"
    ds.PatientAlternativeCalendar = "HEBREW"
    ds.TextValue = "seen by Dr Moreau for DOE^JANE"
    ds.add_new(0x300E0008, "PN", "REVIEWER^ROB")  # Reviewer Name
    ds.add_new(0x00204000, "LT", "patient Jane Doe, bed 4")  # Image Comments (listed: X)
    out = deidentify(ds, POLICY, hospital=HOSPITAL)
    for keyword in ("PatientBirthDateInAlternativeCalendar", "PatientAlternativeCalendar", "TextValue",
                    "ImageComments"):
        assert keyword not in out, keyword
    assert out.ReviewerName == ""  # listed: Z


UNLISTED = [  # public attributes table E.1-1 does not list and the keep-list does not name: any VR, any depth
    (0x00089999, "LO", "DOE JOHN"),  # an unknown element of a public group (what an offline run kept)
    (0x00081090, "LO", "ACME DR 9 s/n 4711 St Elsewhere"),  # Manufacturer's Model Name
    (0x00181020, "LO", "v2.1 JOHN-DOE-WORKSTATION"),  # Software Versions
    (0x00209999, "SH", "DOE"), (0x00189999, "CS", "DOE_JOHN"), (0x00189998, "UN", b"DOE^JOHN"),
    (0x00419999, "OB", b"DOE^JOHN\0"),
]


def test_only_what_the_table_or_the_keep_list_names_survives() -> None:
    """A keep-list, not a block-list: an attribute is in the output only if table E.1-1 lists it with an action
    that keeps a value, or ``KEPT_ATTRIBUTES`` names it (what the image needs, never a name or free text);
    everything else goes, private attributes and sequence items included."""
    ds = chest()
    for tag, vr, value in UNLISTED:
        ds.add_new(tag, vr, value)
    ds.AnatomicRegionSequence = Sequence([Dataset()])  # kept (a code), its items cleaned by the same rules
    region = ds.AnatomicRegionSequence[0]
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "T-D3000", "SRT", "Chest"
    region.add_new(0x00089999, "LO", "DOE JOHN")
    ds.add_new(0x00089998, "SQ", Sequence([Dataset()]))  # an unknown sequence: gone with its items
    ds[0x00089998].value[0].PatientName = "DOE^JOHN"
    ds.VOILUTSequence = Sequence([Dataset()])
    lut = ds.VOILUTSequence[0]
    lut.LUTDescriptor, lut.LUTExplanation = [4, 0, 12], "set by DOE JOHN"
    lut.add_new(0x00283006, "US", [0, 1000, 2000, 4095])  # LUT Data
    out = deidentify(ds, POLICY, hospital=HOSPITAL)
    for tag, _, _ in UNLISTED:
        assert tag not in out, f"{Tag(tag)} survived"
    assert 0x00089998 not in out
    assert [(i.CodeValue, i.CodeMeaning) for i in out.AnatomicRegionSequence] == [("T-D3000", "Chest")]
    assert 0x00089999 not in out.AnatomicRegionSequence[0]
    assert "LUTExplanation" not in out.VOILUTSequence[0] and list(out.VOILUTSequence[0].LUTData) == [0, 1000, 2000,
                                                                                                      4095]
    found = [elem.tag for elem in walk(out) if any("DOE" in text or "JOHN" in text for text in texts(elem))
             or (isinstance(elem.value, bytes) and b"DOE" in elem.value)]
    assert not found
    # what is there is listed by the table or kept by name, at every depth
    unknown = [elem.tag for elem in walk(out) if profile_action(elem.tag) is None and elem.tag not in KEPT_ATTRIBUTES
               and elem.tag.group != 0x0002 and elem.tag not in (Tag("PatientID"), Tag("PatientName"))]
    assert not unknown, [str(Tag(t)) for t in unknown]


DCIODVFY = shutil.which("dciodvfy")


@pytest.mark.skipif(DCIODVFY is None, reason="dciodvfy (Debian package dicom3tools) is not installed")
def test_dciodvfy_finds_nothing_new_in_the_output(tmp_path) -> None:
    """The keep-list keeps what the IOD requires: whatever dciodvfy says of the input, it says nothing worse of
    the de-identified file (a CR from the tests, and a DX as the project's modality writes it)."""
    from ingest.dicom_files import ModalityStudy, build_dataset

    dx = build_dataset(burned_picture(bits=8)[0], ModalityStudy("P-1", "Jane Doe", date(2024, 3, 15), "st-mary",
                                                                 birth_date=date(1960, 1, 1), accession="A-1"))
    for name, ds in (("cr", chest(burn=False)), ("dx", dx)):
        errors = {}
        for which, data in (("in", ds), ("out", deidentify(ds, POLICY, hospital=HOSPITAL))):
            path = tmp_path / f"{name}-{which}.dcm"
            data.save_as(path, enforce_file_format=True)
            checked = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
            errors[which] = {re.sub(r"(Value|value)[^-]*", "", line) for line in checked.stderr.splitlines()
                             if line.startswith("Error")}
        assert errors["out"] <= errors["in"], f"{name}: new errors {sorted(errors['out'] - errors['in'])}"


def test_big_endian_input_comes_out_little_endian_with_the_same_picture() -> None:
    from pathlib import Path

    import pydicom

    path = Path(pydicom.__file__).parent / "data" / "test_files" / "MR_small_bigendian.dcm"
    source = dcmread(path)
    out = saved(deidentify(source, DeidPolicy(key=KEY), hospital=HOSPITAL))
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert np.array_equal(out.pixel_array, source.pixel_array)
