"""A demo RIS: an MLLP listener that stands in for a hospital's RIS in the local stack (as the stand-in doctor
stands in for a radiologist), so that the deliverer's ORU^R01 messages (``delivery.hl7_results``) have somewhere to
go and can be seen arriving.

It takes HL7 v2 messages over MLLP, several per connection and several connections at a time (one thread each),
answers each with an ACK (the MSH's applications and facilities swapped, MSA-1 the configured ``answer``, MSA-2 the
message's control id) and appends one JSON line per ORU message to its log: received_at, control_id,
message_type, patient_id, placer_order, filler_order, score, band, abnormal_flag, priority, result_status and
the answer it gave. The patient's name is never written, and the log file is created readable by its owner only
(0600). Messages whose control id starts with ``PROBE`` (``probe``, a readiness check) and messages of other
types are answered but not logged.

hl7apy's ``MLLPServer`` is not used: its handler reads one message per connection and then closes it, and a
message it cannot route gets no answer at all; a RIS keeps the connection open and answers everything.

Run it with ``python -m delivery.demo_ris --host 127.0.0.1 --port 2575 --log ris.jsonl`` until SIGTERM;
``--answer AE`` (or AR) makes it refuse every message, to show the deliverer setting results aside.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import socketserver
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from delivery.hl7_results import (
    END_BLOCK,
    START_BLOCK,
    MllpError,
    MllpReader,
    er7_field,
    er7_segments,
    escape,
    hl7_time,
    send_mllp,
    unescape,
)

__all__ = ["RisServer", "serve_ris", "probe", "probe_message", "main", "PROBE_PREFIX", "ANSWERS"]

log = logging.getLogger("xraylab.demo_ris")

PROBE_PREFIX = "PROBE"
ANSWERS = ("AA", "AE", "AR", "CA", "CE", "CR")
IDLE_TIMEOUT_S = 120.0  # a connection with no message for this long is closed


class RisServer(socketserver.ThreadingTCPServer):
    """The listener, bound on construction (``port`` 0 picks a free port: see ``port``). ``close`` also ends the
    connections still open."""

    allow_reuse_address = True
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], log_path: Path, *, answer: str = "AA") -> None:
        if answer not in ANSWERS:
            raise ValueError(f"answer must be one of {', '.join(ANSWERS)}, not {answer!r}")
        self.log_path = Path(log_path)
        self.answer = answer
        self._log_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _MllpHandler)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def close(self) -> None:
        """Stop listening and end the open connections."""
        self.server_close()
        with self._connections_lock:
            connections = list(self._connections)
        for sock in connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def track(self, sock: socket.socket, open_: bool) -> None:
        with self._connections_lock:
            (self._connections.add if open_ else self._connections.discard)(sock)

    def answer_message(self, text: str) -> str:
        """The ACK (ER7) of one received message, after logging it when it is an ORU that is no probe."""
        segments = er7_segments(text)
        msh = next((s for s in segments if s[0] == "MSH"), None)
        if msh is None:
            log.info("a frame with no MSH segment: answered AR")
            return _ack(None, "AR", "", "no MSH segment: not an HL7 message")
        control_id = unescape(er7_field(msh, 10))
        message_type = er7_field(msh, 9)
        if message_type.startswith("ORU") and not control_id.startswith(PROBE_PREFIX):
            self.record(_summary(segments, control_id, message_type, self.answer))
        log.info("message %s (%s): %s", control_id, message_type, self.answer)
        text = "" if self.answer in ("AA", "CA") else f"the demo RIS answers {self.answer} to every message"
        return _ack(msh, self.answer, control_id, text)

    def record(self, entry: dict[str, Any]) -> None:
        """Append one JSON line to the log, a file only its owner can read."""
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
        with self._log_lock:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                if os.fstat(fd).st_mode & 0o077:
                    os.fchmod(fd, 0o600)
                os.write(fd, line)
            finally:
                os.close(fd)


class _MllpHandler(socketserver.BaseRequestHandler):
    server: RisServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(IDLE_TIMEOUT_S)
        self.server.track(sock, True)
        reader = MllpReader(sock)
        try:
            while True:
                try:
                    frame = reader.read_frame()
                except (MllpError, OSError) as exc:  # broken framing, idle too long, reset: drop the connection
                    log.info("connection from %s closed (%s: %s)", self.client_address[0], type(exc).__name__, exc)
                    return
                if frame is None:
                    return
                reply = self.server.answer_message(frame.decode("utf-8", errors="replace"))
                sock.sendall(START_BLOCK + reply.encode("utf-8") + END_BLOCK)
        except OSError:
            return
        finally:
            self.server.track(sock, False)


def _ack(msh: list[str] | None, code: str, control_id: str, text: str) -> str:
    """An ACK: the received MSH's sending and receiving applications and facilities swapped (their ER7 copied as
    is), MSH-9 ACK^<trigger>^ACK, its own control id, MSA-1 ``code``, MSA-2 ``control_id``, MSA-3 ``text``."""
    def f(n: int) -> str:
        return er7_field(msh, n) if msh else ""

    trigger = er7_field(msh, 9, 2) if msh else ""
    version = f(12) or "2.5"
    header = ["MSH", "^~\\&", f(5), f(6), f(3), f(4), hl7_time(datetime.now(UTC)), "",
              f"ACK^{trigger}^ACK", "ACK" + secrets.token_hex(6), f(11) or "P", version]
    msa = ["MSA", code, escape(control_id), escape(text)]
    return "|".join(header) + "\r" + "|".join(msa) + "\r"


def _summary(segments: list[list[str]], control_id: str, message_type: str, answer: str) -> dict[str, Any]:
    """What the log keeps of one ORU: identifiers, the score and band, flags and priority; no name."""

    def first(name: str) -> list[str]:
        return next((s for s in segments if s[0] == name), [name])

    def text(value: str) -> str | None:
        return unescape(value).strip() or None

    pid, orc, obr, tq1 = first("PID"), first("ORC"), first("OBR"), first("TQ1")
    observations = {er7_field(s, 3, 1): s for s in segments if s[0] == "OBX"}
    score_obx = observations.get("XRAYLAB-SCORE") or next((s for s in segments if s[0] == "OBX"
                                                           and er7_field(s, 2) == "NM"), ["OBX"])
    band_obx = observations.get("XRAYLAB-BAND", ["OBX"])
    try:
        score: float | None = float(er7_field(score_obx, 5))
    except ValueError:
        score = None
    return {
        "received_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "control_id": control_id,
        "message_type": unescape(message_type),
        "patient_id": text(er7_field(pid, 3, 1)),
        "placer_order": text(er7_field(orc, 2, 1) or er7_field(obr, 2, 1)),
        "filler_order": text(er7_field(orc, 3, 1) or er7_field(obr, 3, 1)),
        "score": score,
        "band": text(er7_field(band_obx, 5, 1)),
        "abnormal_flag": text(er7_field(score_obx, 8)),
        "priority": text(er7_field(tq1, 9, 1) or er7_field(obr, 5)),
        "result_status": text(er7_field(obr, 25)),
        "answer": answer,
    }


def serve_ris(host: str, port: int, log_path: Path, *, answer: str = "AA",
              stop_event: threading.Event | None = None) -> None:
    """Listen on ``host:port`` and answer every message with ``answer`` until ``stop_event`` is set (forever
    without one), logging ORU messages to ``log_path`` (see the module docstring)."""
    server = RisServer((host, port), Path(log_path), answer=answer)
    server.timeout = 0.2  # how often handle_request looks at stop_event
    log.info("demo RIS listening on %s:%d, answering %s, logging to %s", host, server.port, answer, log_path)
    try:
        while stop_event is None or not stop_event.is_set():
            server.handle_request()
    finally:
        server.close()
        log.info("demo RIS on %s:%d stopped", host, server.port)


def probe_message(control_id: str | None = None) -> str:
    """A minimal message that asks for an ACK and files nothing: an NMQ^N01 (application management query) whose
    control id starts with ``PROBE``."""
    control_id = control_id or PROBE_PREFIX + secrets.token_hex(6)
    now = hl7_time(datetime.now(UTC))
    return (f"MSH|^~\\&|XRAYLAB|XRAYLAB|RIS||{now}||NMQ^N01^NMQ_N01|{control_id}|P|2.5|||AL|NE\r"
            f"NCK|{now}\r")


def probe(host: str, port: int, timeout_s: float = 2.0) -> bool:
    """Whether an MLLP listener answers at ``host:port``: one real exchange (``probe_message``), True for any ACK
    that names it (whatever its code), False when the connection fails, times out or gets no such ACK."""
    try:
        send_mllp(host, port, probe_message(), timeout_s=timeout_s)
    except (OSError, MllpError):
        return False
    return True


def main(argv: list[str] | None = None) -> None:
    """``python -m delivery.demo_ris``: serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m delivery.demo_ris", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2575)
    parser.add_argument("--log", type=Path, required=True, help="the JSON lines log of received results (0600)")
    parser.add_argument("--answer", default="AA", choices=ANSWERS, help="MSA-1 of every ACK (default AA)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    serve_ris(args.host, args.port, args.log, answer=args.answer, stop_event=stop)


if __name__ == "__main__":
    main()
