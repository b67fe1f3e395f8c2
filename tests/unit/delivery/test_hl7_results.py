"""The ORU^R01 xraylab sends a RIS (``delivery.hl7_results``): parsed back by hl7apy at its strict level, every field
the RIS reads is where it should be, and free text with HL7 delimiters or line breaks stays in its field. Sending
over MLLP is tried on real sockets on 127.0.0.1: against the demo RIS (``delivery.demo_ris``) answering AA or AE,
a closed port, a listener that never answers and one that answers garbage."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from delivery.demo_ris import probe, probe_message, serve_ris
from delivery.hl7_results import (
    END_BLOCK,
    START_BLOCK,
    Ack,
    MllpError,
    build_oru,
    er7_segments,
    parse_ack,
    send_mllp,
    unescape,
)
from delivery.result import ScoredStudy
from xraylab.bands import NORMAL, PNEUMONIA, UNSURE
from xraylab.delivery_config import RisDestination

REPO = Path(__file__).resolve().parents[3]
SCORED_AT = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
SENT_AT = datetime(2025, 3, 4, 6, 0, 0, tzinfo=UTC)
DESTINATION = RisDestination(name="north", host="127.0.0.1", port=2575, receiving_application="RIS",
                             receiving_facility="NORTHGATE", sending_application="XRAYLAB", sending_facility="LAB")


def scored(**changes: object) -> ScoredStudy:
    study = ScoredStudy(
        study_id=7, study_uid="0123456789abcdef0123456789abcdef", prediction_id=11, score=0.876543,
        band=PNEUMONIA, model_name="densenet121", model_version="2025.03.1",
        card_reference="s3://models/pneumonia/2025.03.1/card.json",
        notice="Trained on real X-rays (chest-xray): for research use only, not a medical device.",
        research_only=True, scored_at=SCORED_AT, hospital="northgate", patient_id="PAT-0042",
        patient_name="Jane Quincy Doe", accession_number="ACC-1001", study_instance_uid="1.2.826.0.1.3680043.2.1",
        study_date="2025-03-04", modality="DX")
    return replace(study, **changes)  # type: ignore[arg-type]


def parsed(message: str):
    return parse_message(message, validation_level=VALIDATION_LEVEL.STRICT, force_validation=True)


def segment_names(message: str) -> list[str]:
    return [s[0] for s in er7_segments(message)]


# --- the message ---------------------------------------------------------------------------------------------


def test_oru_fields() -> None:
    message = build_oru(scored(), DESTINATION, "XL42", sent_at=SENT_AT)
    assert message.endswith("\r") and "\n" not in message
    assert segment_names(message) == ["MSH", "PID", "ORC", "OBR", "TQ1", "OBX", "OBX", "NTE", "NTE"]
    m = parsed(message)
    msh = m.msh
    assert msh.msh_3.to_er7() == "XRAYLAB" and msh.msh_4.to_er7() == "LAB"
    assert msh.msh_5.to_er7() == "RIS" and msh.msh_6.to_er7() == "NORTHGATE"
    assert msh.msh_7.to_er7() == "20250304060000+0000"
    assert msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
    assert msh.msh_10.to_er7() == "XL42"
    assert (msh.msh_11.to_er7(), msh.msh_12.to_er7()) == ("P", "2.5")
    assert (msh.msh_15.to_er7(), msh.msh_16.to_er7(), msh.msh_18.to_er7()) == ("AL", "NE", "UNICODE UTF-8")

    result = m.oru_r01_patient_result
    pid = result.oru_r01_patient.pid
    assert pid.pid_3.to_er7() == "PAT-0042^^^northgate"
    assert pid.pid_5.to_er7() == "Doe^Jane^Quincy"

    order = result.oru_r01_order_observation
    assert order.orc.orc_1.to_er7() == "RE"
    assert order.orc.orc_2.ei_1.to_er7() == order.obr.obr_2.ei_1.to_er7() == "ACC-1001"
    assert order.orc.orc_3.ei_1.to_er7() == order.obr.obr_3.ei_1.to_er7() == "0123456789abcdef0123456789abcdef"
    obr = order.obr
    assert obr.obr_4.to_er7() == "XRAYLAB-PNEU^Pneumonia triage (AI)^99XRAYLAB"
    assert obr.obr_5.to_er7() == "S"
    assert obr.obr_7.to_er7() == obr.obr_22.to_er7() == "20250304050607+0000"
    assert obr.obr_20.to_er7() == "1.2.826.0.1.3680043.2.1"
    assert obr.obr_25.to_er7() == "F"
    assert order.oru_r01_timing_qty.tq1.tq1_9.to_er7() == "S"

    score, band = list(order.oru_r01_observation)
    assert score.obx.obx_2.to_er7() == "NM"
    assert score.obx.obx_3.to_er7() == "XRAYLAB-SCORE^Pneumonia score^99XRAYLAB"
    assert score.obx.obx_5.to_er7() == "0.8765"
    assert score.obx.obx_6.ce_1.to_er7() == "1"
    assert score.obx.obx_8.to_er7() == "A"
    assert score.obx.obx_11.to_er7() == "F"
    assert score.obx.obx_14.to_er7() == "20250304050607+0000"
    assert score.obx.obx_17.ce_1.to_er7() == "densenet121"
    assert "2025.03.1" in score.obx.obx_18.ei_1.to_er7()
    assert band.obx.obx_2.to_er7() == "CE"
    assert band.obx.obx_3.to_er7() == "XRAYLAB-BAND^Pneumonia risk band^99XRAYLAB"
    assert band.obx.obx_5.to_er7() == "Pneumonia^pneumonia likely^99XRAYLAB"
    assert band.obx.obx_8.to_er7() == "A"
    notes = [unescape(n.nte_3.to_er7()) for n in band.nte]
    assert notes[0] == scored().notice
    assert "s3://models/pneumonia/2025.03.1/card.json" in notes[1]


@pytest.mark.parametrize(("band", "flag", "priority"), [(PNEUMONIA, "A", "S"), (UNSURE, "A", "R"), (NORMAL, "N", "R")])
def test_flags_and_priority_per_band(band: str, flag: str, priority: str) -> None:
    order = parsed(build_oru(scored(band=band), DESTINATION, "XL1", sent_at=SENT_AT)) \
        .oru_r01_patient_result.oru_r01_order_observation
    assert order.oru_r01_timing_qty.tq1.tq1_9.to_er7() == priority
    assert order.obr.obr_5.to_er7() == priority
    assert [g.obx.obx_8.to_er7() for g in order.oru_r01_observation] == [flag, flag]


def test_delimiters_and_line_breaks_stay_in_their_field() -> None:
    notice = "Trained on a|b^c~d\\e&f\rMSH|^~\\&|EVIL\nOBX|9"
    study = scored(patient_name="Jane|X^Y~Z\\W&V\rPID|evil", notice=notice, research_only=True,
                   patient_id="P|1^2\r3", accession_number="A&B\r\nC")
    message = build_oru(study, DESTINATION, "XL2", sent_at=SENT_AT)
    assert message.count("\r") == 10 and "\n" not in message
    assert segment_names(message) == ["MSH", "PID", "ORC", "OBR", "TQ1", "OBX", "OBX", "NTE", "NTE", "NTE"]
    result = parsed(message).oru_r01_patient_result
    pid = result.oru_r01_patient.pid
    assert unescape(pid.pid_3.cx_1.to_er7()) == "P|1^2 3"
    assert unescape(pid.pid_5.xpn_1.to_er7()) == "PID|evil"
    assert unescape(pid.pid_5.xpn_2.to_er7()) == "Jane|X^Y~Z\\W&V"
    order = result.oru_r01_order_observation
    assert unescape(order.orc.orc_2.ei_1.to_er7()) == "A&B C"
    notes = [unescape(n.nte_3.to_er7()) for n in list(order.oru_r01_observation)[1].nte]
    assert notes[0] == "Trained on a|b^c~d\\e&f MSH|^~\\&|EVIL OBX|9"
    assert notes[1] == "For research use only, not a medical device."


def test_names_and_missing_patient() -> None:
    def pid_of(**changes: object) -> str:
        return next(s for s in er7_segments(build_oru(scored(**changes), DESTINATION, "XL3", sent_at=SENT_AT))
                    if s[0] == "PID")[5]

    assert pid_of(patient_name="Jane Doe") == "Doe^Jane"
    assert pid_of(patient_name="Maria José García López") == "Maria José García López"
    no_name = build_oru(scored(patient_name=None), DESTINATION, "XL3", sent_at=SENT_AT)
    assert next(s for s in er7_segments(no_name) if s[0] == "PID")[3:6] == ["PAT-0042^^^northgate", "", ""]
    parse_message(no_name, validation_level=VALIDATION_LEVEL.STRICT)  # PID-5 is required: empty, not made up
    message = build_oru(scored(patient_id=None, accession_number=None, study_instance_uid=None,
                               hospital="Northgate General Hospital"), DESTINATION, "XL4", sent_at=SENT_AT)
    assert "PID" not in segment_names(message) and "Jane" not in message
    order = parsed(message).oru_r01_patient_result.oru_r01_order_observation
    assert order.orc.orc_2.to_er7() == "" and order.orc.orc_3.ei_1.to_er7() == scored().study_uid
    long_hospital = build_oru(scored(hospital="Northgate General Hospital"), DESTINATION, "XL5", sent_at=SENT_AT)
    assert parsed(long_hospital).oru_r01_patient_result.oru_r01_patient.pid.pid_3.to_er7() == "PAT-0042"


def test_bad_control_id_or_score() -> None:
    for control_id in ("", "X" * 21, "XL|1", "XL\r1"):
        with pytest.raises(ValueError):
            build_oru(scored(), DESTINATION, control_id, sent_at=SENT_AT)
    with pytest.raises(ValueError):
        build_oru(scored(score=float("nan")), DESTINATION, "XL1", sent_at=SENT_AT)


def test_parse_ack() -> None:
    ack = parse_ack(b"MSH|^~\\&|RIS|N|XRAYLAB|LAB|20250101||ACK^R01^ACK|A1|P|2.5\rMSA|AE|XL1\r"
                    b"ERR||||E||||unknown \\T\\ order " + b"x" * 300 + b"\r")
    assert (ack.code, ack.control_id, ack.refused, ack.accepted) == ("AE", "XL1", True, False)
    assert ack.text.startswith("unknown & order") and len(ack.text) == 200
    assert parse_ack("MSH|^~\\&|||||||ACK|1|P|2.3\rMSA|CA|XL9|ok\r") == Ack("CA", "XL9", "ok")
    assert Ack("CA", "x").accepted and Ack("AR", "x").refused and not Ack("AR", "x").accepted
    for bad in ("MSA|AA|XL1", "MSH|^~\\&|||||||ACK|1|P|2.5\r", "MSH|^~\\&|||||||ACK|1|P|2.5\rMSA|OK|XL1"):
        with pytest.raises(MllpError):
            parse_ack(bad)


# --- MLLP ------------------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not probe("127.0.0.1", port, timeout_s=0.5):
        assert time.monotonic() < deadline, f"the demo RIS on {port} did not answer"
        time.sleep(0.02)


@pytest.fixture()
def demo_ris(tmp_path: Path) -> Iterator[Callable[..., tuple[int, Path]]]:
    started: list[tuple[threading.Event, threading.Thread]] = []

    def start(answer: str = "AA") -> tuple[int, Path]:
        port, log_path, stop = free_port(), tmp_path / f"ris-{answer}.jsonl", threading.Event()
        thread = threading.Thread(target=serve_ris, args=("127.0.0.1", port, log_path),
                                  kwargs={"answer": answer, "stop_event": stop}, daemon=True)
        thread.start()
        started.append((stop, thread))
        wait_ready(port)
        return port, log_path

    yield start
    for stop, thread in started:
        stop.set()
        thread.join(timeout=5)
        assert not thread.is_alive()


@pytest.fixture()
def raw_listener() -> Iterator[Callable[[bytes | None], int]]:
    """A listener that accepts, reads, and answers ``reply`` and closes, or (None) never answers."""
    sockets: list[socket.socket] = []

    def start(reply: bytes | None) -> int:
        server = socket.create_server(("127.0.0.1", 0))
        sockets.append(server)

        def serve() -> None:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            sockets.append(conn)
            conn.recv(65536)
            if reply is not None:
                conn.sendall(reply)
                conn.close()

        threading.Thread(target=serve, daemon=True).start()
        return int(server.getsockname()[1])

    yield start
    for sock in sockets:
        sock.close()


def test_send_to_demo_ris(demo_ris: Callable[..., tuple[int, Path]]) -> None:
    port, log_path = demo_ris()
    message = build_oru(scored(), DESTINATION, "XL77", sent_at=SENT_AT)
    ack = send_mllp("127.0.0.1", port, message, timeout_s=2.0)
    assert ack == Ack("AA", "XL77", "") and ack.accepted and not ack.refused
    lines = log_path.read_text().splitlines()
    assert len(lines) == 1  # the readiness probes are answered, not logged
    entry = json.loads(lines[0])
    assert entry["control_id"] == "XL77" and entry["message_type"] == "ORU^R01^ORU_R01"
    assert (entry["patient_id"], entry["placer_order"], entry["filler_order"]) == \
        ("PAT-0042", "ACC-1001", scored().study_uid)
    assert (entry["score"], entry["band"], entry["abnormal_flag"], entry["priority"]) == (0.8765, PNEUMONIA, "A", "S")
    assert "Jane" not in lines[0] and "Doe" not in lines[0] and "patient_name" not in entry
    assert stat.S_IMODE(log_path.stat().st_mode) == 0o600


def test_several_messages_on_one_connection(demo_ris: Callable[..., tuple[int, Path]]) -> None:
    port, log_path = demo_ris()
    messages = [build_oru(scored(band=b), DESTINATION, f"XL{i}", sent_at=SENT_AT)
                for i, b in enumerate((PNEUMONIA, NORMAL), start=1)]
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(b"".join(START_BLOCK + m.encode() + END_BLOCK for m in messages))  # back to back
        data = b""
        while data.count(END_BLOCK) < 2:
            chunk = sock.recv(65536)
            assert chunk
            data += chunk
    acks = [parse_ack(frame.lstrip(START_BLOCK)) for frame in data.split(END_BLOCK)[:2]]
    assert [(a.code, a.control_id) for a in acks] == [("AA", "XL1"), ("AA", "XL2")]
    ack_msh = er7_segments(data.split(END_BLOCK)[0].lstrip(START_BLOCK).decode())[0]
    assert ack_msh[3:7] == ["RIS", "NORTHGATE", "XRAYLAB", "LAB"]  # applications and facilities swapped
    assert [json.loads(line)["priority"] for line in log_path.read_text().splitlines()] == ["S", "R"]


def test_refusing_ris(demo_ris: Callable[..., tuple[int, Path]]) -> None:
    port, _ = demo_ris("AE")
    ack = send_mllp("127.0.0.1", port, build_oru(scored(), DESTINATION, "XL5", sent_at=SENT_AT), timeout_s=2.0)
    assert ack.refused and not ack.accepted and ack.code == "AE" and ack.control_id == "XL5" and ack.text


def test_closed_port() -> None:
    port = free_port()
    with pytest.raises(ConnectionRefusedError):
        send_mllp("127.0.0.1", port, probe_message(), timeout_s=0.5)
    assert probe("127.0.0.1", port, timeout_s=0.5) is False


def test_listener_that_never_answers(raw_listener: Callable[[bytes | None], int]) -> None:
    port = raw_listener(None)
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        send_mllp("127.0.0.1", port, probe_message(), timeout_s=0.5)
    assert time.monotonic() - began < 2.0


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 400 Bad Request\r\n\r\n",
    START_BLOCK + b"not an HL7 message" + END_BLOCK,
    START_BLOCK + b"MSH|^~\\&|RIS||||20250101||ACK|1|P|2.5\rMSA|AA|SOMEONE-ELSE\r" + END_BLOCK,
    START_BLOCK + b"MSH|^~\\&|RIS||||20250101||ACK|1|P|2.5\rMSA|A",  # closed inside the frame
    b"",  # closed without a word
])
def test_listener_that_answers_garbage(raw_listener: Callable[[bytes | None], int], reply: bytes) -> None:
    port = raw_listener(reply)
    with pytest.raises(MllpError):
        send_mllp("127.0.0.1", port, probe_message(), timeout_s=2.0)


def test_probe(demo_ris: Callable[..., tuple[int, Path]]) -> None:
    port, log_path = demo_ris()
    assert probe("127.0.0.1", port, timeout_s=1.0) is True
    assert not log_path.exists()


def test_runs_as_a_module_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, "-m", "delivery.demo_ris", "--port", str(port), "--log",
                                str(tmp_path / "ris.jsonl")], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, timeout_s=8.0)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
