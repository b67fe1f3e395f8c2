"""`xraylab dlq` refuses bad arguments before it reaches for Kafka."""

import subprocess
import sys

XRAYLAB = [sys.executable, "-m", "xraylab_cli"]


def dlq(*args: str) -> subprocess.CompletedProcess:
    # Nothing listens on port 1: any of these that reached for the broker would fail differently.
    env = {"PATH": "/usr/bin:/bin", "XRAYLAB_KAFKA_BOOTSTRAP": "127.0.0.1:1", "XRAYLAB_ENV_FILE": "/nonexistent"}
    return subprocess.run([*XRAYLAB, "dlq", *args], capture_output=True, text=True, timeout=120, env=env)


def test_replay_without_saying_what_is_refused() -> None:
    out = dlq("replay")
    assert out.returncode == 2 and "--reason" in out.stderr and "--all" in out.stderr


def test_an_unknown_reason_is_refused_with_the_known_ones() -> None:
    for command in ("list", "replay"):
        out = dlq(command, "--reason", "missing_objekt")
        assert out.returncode == 2 and "unknown reason missing_objekt" in out.stderr
        assert "missing_object" in out.stderr and "retries_exhausted" in out.stderr


def upload(*args: str, tmp: str = "/nonexistent") -> subprocess.CompletedProcess:
    # Nothing listens on port 1: an upload that reached for the PACS or S3 would fail differently.
    env = {"PATH": "/usr/bin:/bin", "XRAYLAB_ENV_FILE": "/nonexistent", "XRAYLAB_ORTHANC_DICOM_PORT": "1",
           "XRAYLAB_S3_PORT": "1", "XRAYLAB_STATE_DIR": tmp}
    return subprocess.run([*XRAYLAB, "upload", *args], capture_output=True, text=True, timeout=120, env=env)


def test_dicom_upload_arguments_are_checked_before_anything_is_sent(tmp_path) -> None:
    for args, said in ((["--to-pacs"], "--to-pacs sends DICOM"),
                       (["--dicom", "--syntax", "mpeg2"], "--syntax 'mpeg2'"),
                       (["--dicom", "--bits", "16", "--syntax", "jpeg-baseline"], "JPEG baseline holds 8")):
        out = upload(*args, tmp=str(tmp_path))
        assert out.returncode == 2 and said in out.stderr, (args, out.stderr[-300:])
    text = tmp_path / "notes.dcm"
    text.write_text("not DICOM")
    out = upload("--to-pacs", str(text), tmp=str(tmp_path))
    assert out.returncode == 2 and "not DICOM Part 10 files" in out.stderr
    refused = upload("--dicom", "--to-pacs", "--count", "1", tmp=str(tmp_path))  # nothing listens on port 1
    assert refused.returncode == 2 and "PACS:" in refused.stderr


def test_an_upload_without_the_uploaders_keys_says_which_in_one_line(tmp_path) -> None:
    """A process given no upload identity (docs/security.md) is told the settings it lacks, not a traceback."""
    out = upload("--count", "1", tmp=str(tmp_path))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: XRAYLAB_S3_UPLOAD_ACCESS_KEY / XRAYLAB_S3_UPLOAD_SECRET_KEY are not set")


def test_dlq_without_the_admins_kafka_password_says_so_in_one_line() -> None:
    out = dlq("list")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: XRAYLAB_KAFKA_ADMIN_PASSWORD is not set")
