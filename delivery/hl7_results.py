"""A scored study as an HL7 v2.5 ORU^R01 for a hospital's RIS, sent over MLLP, and the RIS's answer read back.

Why HL7 v2 and MLLP: it is what a RIS takes results in. One message per scored study (``build_oru``), built with
hl7apy and checked against its v2.5 ORU_R01 structure (required segments and fields, allowed children, data
types; hl7apy's length and table remarks are warnings only and do not stop a message), then sent by
``send_mllp``: ``0x0b`` + message + ``0x1c 0x0d`` over TCP, the answer read to its ``0x1c 0x0d`` (at most
``MAX_FRAME_BYTES``, within ``timeout_s``) and its MSA read into an ``Ack``.

What the message says (segments end with ``\\r``)::

    MSH  ORU^R01^ORU_R01, processing P, version 2.5, MSH-15 AL / MSH-16 NE (enhanced mode: one synchronous
         answer, a commit ACK CA/CE/CR, though most RIS answer AA/AE/AR, which ``Ack`` reads the same way),
         MSH-18 UNICODE UTF-8 (the bytes on the wire are UTF-8)
    PID  PID-3 patient id^^^hospital (the assigning authority, an IS of at most 20 characters in v2.5: a longer
         hospital name is left out rather than cut), PID-5 family^given^middle (see ``_person_name``; empty for a
         study with no name, though v2.5 makes PID-5 required: a made-up name could be filed as the patient's); no PID
         when there is no patient id: the RIS then matches the result by its order numbers, and a name alone
         identifies no one safely
    ORC  RE, ORC-2 placer order = the accession number (where there is one), ORC-3 filler order = xraylab's
         study id^sending application
    OBR  OBR-2/3 the same, OBR-4 XRAYLAB-PNEU^Pneumonia triage (AI)^99XRAYLAB, OBR-5 priority (deprecated in
         2.5, kept for receivers that still read it), OBR-7 and OBR-22 the scoring time, OBR-20 (filler field 1)
         the DICOM Study Instance UID where known, OBR-25 F
    TQ1  TQ1-9 priority: S (stat) for the Pneumonia band, R (routine) otherwise
    OBX  1: NM, XRAYLAB-SCORE^Pneumonia score^99XRAYLAB, the score with 4 decimals, unit 1 (UCUM, no units)
    OBX  2: CE, XRAYLAB-BAND^Pneumonia risk band^99XRAYLAB, band^finding^99XRAYLAB (Normal^pneumonia unlikely^..)
    NTE  after OBX 2: the card's notice, the research statement (research-only models whose notice does not say
         it), and the model with its card reference

Abnormal flags (OBX-8, table 0078 as of v2.5): Pneumonia -> ``A``; Unsure -> ``A``; Normal -> ``N``. v2.5's table
has no "indeterminate" (``IND`` arrives with v2.7's interpretation codes; ``I`` means "intermediate", a
susceptibility, and an empty flag would read as "no interpretation", which some RIS show as unremarkable): an
unsure triage must not look normal, so it is flagged abnormal like Pneumonia, and the band OBX (``Unsure``,
"pneumonia indeterminate") and the priority (R, only Pneumonia is S) tell the two apart.

Free text (names, notice, card reference, identifiers) has its line breaks and other control characters replaced by
spaces, and the HL7 delimiters escaped (``| ^ ~ \\ &`` -> ``\\F\\ \\S\\ \\R\\ \\E\\ \\T\\``) before hl7apy sees it:
hl7apy takes a string assigned to a field as ER7 and escapes nothing, so nothing can add a field, a component or
a segment. Logs name messages by control id and study id, never a patient.
"""

from __future__ import annotations

import logging
import math
import re
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from delivery.result import ScoredStudy
from xraylab.bands import NORMAL, PNEUMONIA, UNSURE
from xraylab.delivery_config import RisDestination

__all__ = [
    "build_oru",
    "send_mllp",
    "parse_ack",
    "Ack",
    "MllpError",
    "MllpReader",
    "escape",
    "unescape",
    "er7_segments",
    "er7_field",
    "hl7_time",
    "ABNORMAL_FLAGS",
    "PRIORITIES",
    "PRIVATE_SCHEME",
    "SERVICE",
    "SCORE_OBSERVATION",
    "BAND_OBSERVATION",
    "RESEARCH_STATEMENT",
    "START_BLOCK",
    "END_BLOCK",
    "MAX_FRAME_BYTES",
]

log = logging.getLogger("xraylab.delivery.ris")

PRIVATE_SCHEME = "99XRAYLAB"  # a local coding system ("99" prefix: HL7 table 0396's local codes)
SERVICE = f"XRAYLAB-PNEU^Pneumonia triage (AI)^{PRIVATE_SCHEME}"  # OBR-4
SCORE_OBSERVATION = f"XRAYLAB-SCORE^Pneumonia score^{PRIVATE_SCHEME}"  # OBX-3 of the score
BAND_OBSERVATION = f"XRAYLAB-BAND^Pneumonia risk band^{PRIVATE_SCHEME}"  # OBX-3 of the band
RESEARCH_STATEMENT = "For research use only, not a medical device."  # as in the SR (delivery.dicom_results)

# OBX-8 per band (HL7 v2.5 table 0078; see the module docstring), TQ1-9 / OBR-5 per band (tables 0485 / 0027).
ABNORMAL_FLAGS = {PNEUMONIA: "A", UNSURE: "A", NORMAL: "N"}
PRIORITIES = {PNEUMONIA: "S", UNSURE: "R", NORMAL: "R"}

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
MAX_FRAME_BYTES = 1 << 20  # an answer (or, for the demo RIS, a message) larger than this is no MLLP we speak

_ACK_CODES = {"AA", "AE", "AR", "CA", "CE", "CR"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_ESCAPES = {"|": "\\F\\", "^": "\\S\\", "~": "\\R\\", "\\": "\\E\\", "&": "\\T\\"}
_UNESCAPES = {"F": "|", "S": "^", "R": "~", "E": "\\", "T": "&"}


class MllpError(RuntimeError):
    """The peer broke the MLLP framing, answered something that is no HL7 ACK, or acknowledged another message:
    nothing says the message was taken, so it is sent again later (transient)."""


@dataclass(frozen=True)
class Ack:
    """The receiver's MSA: ``code`` (MSA-1: AA, AE, AR, or in enhanced mode CA, CE, CR), ``control_id`` (MSA-2,
    the acknowledged message's MSH-10) and ``text`` (MSA-3, else the ERR segment's message; at most 200
    characters)."""

    code: str
    control_id: str
    text: str = ""

    @property
    def accepted(self) -> bool:
        """The message is taken (AA, CA)."""
        return self.code in ("AA", "CA")

    @property
    def refused(self) -> bool:
        """The message is refused for good (AE, AR, CE, CR): set aside with ``text`` as the reason."""
        return self.code in ("AE", "AR", "CE", "CR")


# --- ER7 text -------------------------------------------------------------------------------------------------


def escape(value: object) -> str:
    """``value`` as the text of one HL7 component: control characters (CR, LF ...) as spaces, the delimiters of
    the default encoding characters escaped, surrounding space stripped; None as empty."""
    if value is None:
        return ""
    text = _CONTROL.sub(" ", str(value)).strip()
    return "".join(_ESCAPES.get(c, c) for c in text)


def unescape(value: str) -> str:
    """ER7 text back to the text it stands for: ``\\F\\ \\S\\ \\R\\ \\E\\ \\T\\`` as their delimiters, other escape
    sequences (formatting, hexadecimal) left out."""
    return re.sub(r"\\([^\\]*)\\", lambda m: _UNESCAPES.get(m.group(1), ""), value)


def er7_segments(message: str) -> list[list[str]]:
    """A tolerant split of an ER7 message: one list of fields per segment (segments by CR or LF), field 0 the
    segment's name; for MSH, field 1 is the field separator and field 2 the encoding characters, so that
    ``fields[n]`` is MSH-n as for every other segment. Fields stay escaped: split them on ``^`` and
    ``unescape`` the parts. Assumes the default encoding characters ``|^~\\&`` (what xraylab sends and the
    demo RIS answers); a message with other ones is split by its own field separator only."""
    out: list[list[str]] = []
    for line in re.split(r"[\r\n]+", message):
        line = line.strip("\x0b\x1c ")
        if len(line) < 3:
            continue
        if line.startswith("MSH") and len(line) > 3:
            separator = line[3]
            rest = line[4:].split(separator)
            out.append(["MSH", separator, *rest])
        else:
            out.append(line.split("|"))
    return out


def er7_field(fields: list[str], n: int, component: int | None = None) -> str:
    """Field ``n`` of a segment split by ``er7_segments`` (its first repetition), or one of its components
    (1-based), still escaped; empty where there is none."""
    if n >= len(fields):
        return ""
    value = fields[n].split("~")[0] if fields[0] != "MSH" or n > 2 else fields[n]
    if component is None:
        return value
    parts = value.split("^")
    return parts[component - 1] if component <= len(parts) else ""


def hl7_time(moment: datetime) -> str:
    """An HL7 TS/DTM in UTC with its offset, to the second: ``YYYYMMDDHHMMSS+0000``; a naive time is UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y%m%d%H%M%S+0000")


def _control_id(control_id: str) -> str:
    if not control_id or len(control_id) > 20 or escape(control_id) != control_id or not control_id.isprintable():
        raise ValueError(f"an HL7 message control id has 1 to 20 printable characters, no delimiter: {control_id!r}")
    return control_id


def _person_name(name: str | None) -> str:
    """XPN family^given^middle from the studies table's "Given Middle Family": two or three words are split so;
    one word, or four and more (a family name or given names of several words cannot be told apart), go whole
    into the family name."""
    words = _CONTROL.sub(" ", name or "").split()
    if not words:
        return ""
    if 2 <= len(words) <= 3:
        given, *middle, family = words
        return "^".join(escape(p) for p in (family, given, *middle))
    return escape(" ".join(words))


# --- the ORU^R01 ----------------------------------------------------------------------------------------------


def build_oru(result: ScoredStudy, destination: RisDestination, control_id: str, *, sent_at: datetime) -> str:
    """The ORU^R01 (HL7 v2.5, ER7, segments ended by ``\\r``) of one scored study for ``destination``, with
    ``control_id`` as MSH-10 (the same on every resend of the outbox row, so a RIS can see a repeat) and
    ``sent_at`` as MSH-7. The segments and flags are those of the module docstring.

    Raises ``ValueError`` for a control id that HL7 cannot carry or a score that is no finite number, and
    hl7apy's ``ValidationError`` should the message not fit the v2.5 ORU_R01 structure."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.core import Message

    control_id = _control_id(control_id)
    if not math.isfinite(result.score):
        raise ValueError(f"study {result.study_uid}: the score {result.score!r} is no finite number")
    flag = ABNORMAL_FLAGS.get(result.band, "")
    priority = PRIORITIES.get(result.band, "R")
    scored = hl7_time(result.scored_at)
    placer = escape(result.accession_number)
    filler = f"{escape(result.study_uid)}^{escape(destination.sending_application)}"
    method = f"{escape(result.model_name)}^{escape(f'{result.model_name} model {result.model_version}')}" \
             f"^{PRIVATE_SCHEME}"
    equipment = f"{escape(f'{result.model_name} {result.model_version}')}^{escape(destination.sending_application)}"

    message = Message("ORU_R01", version="2.5", validation_level=VALIDATION_LEVEL.TOLERANT)
    msh = message.msh
    msh.msh_3 = escape(destination.sending_application)
    msh.msh_4 = escape(destination.sending_facility)
    msh.msh_5 = escape(destination.receiving_application)
    if destination.receiving_facility:
        msh.msh_6 = escape(destination.receiving_facility)
    msh.msh_7 = hl7_time(sent_at)
    msh.msh_9 = "ORU^R01^ORU_R01"
    msh.msh_10 = control_id
    msh.msh_11 = "P"
    msh.msh_15 = "AL"
    msh.msh_16 = "NE"
    msh.msh_18 = "UNICODE UTF-8"

    patient_result = message.add_group("ORU_R01_PATIENT_RESULT")
    if result.patient_id and escape(result.patient_id):
        pid = patient_result.add_group("ORU_R01_PATIENT").pid
        pid.pid_1 = "1"
        authority = escape(result.hospital)
        pid.pid_3 = escape(result.patient_id) + (f"^^^{authority}" if 0 < len(authority) <= 20 else "")
        pid.pid_5 = _person_name(result.patient_name)  # required in v2.5: sent empty when unknown, never made up

    order = patient_result.add_group("ORU_R01_ORDER_OBSERVATION")
    orc = order.orc
    orc.orc_1 = "RE"
    if placer:
        orc.orc_2 = placer
    orc.orc_3 = filler
    orc.orc_5 = "CM"
    obr = order.obr
    obr.obr_1 = "1"
    if placer:
        obr.obr_2 = placer
    obr.obr_3 = filler
    obr.obr_4 = SERVICE
    obr.obr_5 = priority
    obr.obr_7 = scored
    if result.study_instance_uid and escape(result.study_instance_uid):
        obr.obr_20 = escape(result.study_instance_uid)
    obr.obr_22 = scored
    obr.obr_25 = "F"
    timing = order.add_group("ORU_R01_TIMING_QTY").tq1
    timing.tq1_1 = "1"
    timing.tq1_9 = priority

    observations = (
        ("NM", SCORE_OBSERVATION, f"{result.score:.4f}", "1^no units^UCUM"),
        ("CE", BAND_OBSERVATION, f"{escape(result.band)}^{escape(result.finding)}^{PRIVATE_SCHEME}", None),
    )
    group = None
    for set_id, (value_type, identifier, value, unit) in enumerate(observations, start=1):
        group = order.add_group("ORU_R01_OBSERVATION")
        obx = group.obx
        obx.obx_1 = str(set_id)
        obx.obx_2 = value_type
        obx.obx_3 = identifier
        obx.obx_5 = value
        if unit:
            obx.obx_6 = unit
        if flag:
            obx.obx_8 = flag
        obx.obx_11 = "F"
        obx.obx_14 = scored
        obx.obx_17 = method
        obx.obx_18 = equipment
        obx.obx_19 = scored
    assert group is not None
    notes = [result.notice]
    if result.research_only and "not a medical device" not in (result.notice or "").lower():
        notes.append(RESEARCH_STATEMENT)
    notes.append(f"Model {result.model_name} {result.model_version}; model card: {result.card_reference}")
    for set_id, note in enumerate((n for n in notes if escape(n)), start=1):
        nte = group.add_segment("NTE")
        nte.nte_1 = str(set_id)
        nte.nte_2 = "L"
        nte.nte_3 = escape(note)

    message.validate()
    return message.to_er7() + "\r"


# --- MLLP -----------------------------------------------------------------------------------------------------


class MllpReader:
    """MLLP frames from one socket, in order; bytes past a frame's end are kept for the next one (a peer may send
    its messages back to back)."""

    def __init__(self, sock: socket.socket, *, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self.sock = sock
        self.max_bytes = max_bytes
        self._buffer = b""

    def read_frame(self, deadline: float | None = None) -> bytes | None:
        """The next frame's content (between ``0x0b`` and ``0x1c 0x0d``); None when the peer closed the
        connection between frames. ``deadline`` (``time.monotonic()``) bounds the whole read with
        ``TimeoutError``; without it the socket's own timeout bounds each wait. Raises ``MllpError`` for bytes
        outside a frame, a frame over ``max_bytes`` or a connection closed inside a frame."""
        while True:
            start = self._buffer.lstrip(b"\r\n\t ")
            if start and not start.startswith(START_BLOCK):
                raise MllpError(f"the peer sent {start[:16]!r} where an MLLP frame (0x0b) should start")
            end = start.find(END_BLOCK)
            if end >= 0:
                self._buffer = start[end + len(END_BLOCK):]
                return start[len(START_BLOCK):end]
            if len(start) > self.max_bytes:
                raise MllpError(f"an MLLP frame over {self.max_bytes} bytes")
            self._buffer = start
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no complete MLLP answer in time")
                self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError as exc:  # socket.timeout is TimeoutError
                raise TimeoutError("no complete MLLP answer in time") from exc
            if not chunk:
                if self._buffer:
                    raise MllpError("the peer closed the connection inside an MLLP frame")
                return None
            self._buffer += chunk


def parse_ack(frame: bytes | str) -> Ack:
    """The ``Ack`` of an HL7 ACK (the content of an MLLP frame), read by a tolerant split so that an ACK of any
    v2 version is read. Raises ``MllpError`` when there is no MSH and MSA, or MSA-1 is no acknowledgment code."""
    text = frame.decode("utf-8", errors="replace") if isinstance(frame, bytes) else frame
    segments = er7_segments(text)
    if not segments or segments[0][0] != "MSH":
        raise MllpError(f"the answer is no HL7 message: {text[:40]!r}")
    msa = next((s for s in segments if s[0] == "MSA"), None)
    if msa is None:
        raise MllpError("the answer has no MSA segment")
    code = unescape(er7_field(msa, 1, 1)).strip().upper()
    if code not in _ACK_CODES:
        raise MllpError(f"the answer's MSA-1 is {code[:10]!r}, no acknowledgment code")
    control_id = unescape(er7_field(msa, 2, 1)).strip()
    reason = unescape(er7_field(msa, 3)).strip()
    for err in (s for s in segments if s[0] == "ERR"):
        if reason:
            break
        reason = _err_text(err)
    reason = _CONTROL.sub(" ", reason)[:200]
    return Ack(code=code, control_id=control_id, text=reason)


def _err_text(err: list[str]) -> str:
    """An ERR segment's message: v2.5 ERR-8 (user message) or ERR-3.2 (the error code's text), v2.4 ERR-1.4.2."""
    coded = er7_field(err, 1, 4).split("&")
    for part in (er7_field(err, 8), er7_field(err, 3, 2), coded[1] if len(coded) > 1 else coded[0]):
        if unescape(part).strip():
            return unescape(part).strip()
    return ""


def _message_control_id(message: str) -> str:
    msh = next((s for s in er7_segments(message) if s[0] == "MSH"), None)
    return unescape(er7_field(msh, 10)) if msh else ""


def send_mllp(host: str, port: int, message: str, *, timeout_s: float = 10.0) -> Ack:
    """Send one HL7 message (ER7) over MLLP to ``host:port`` (UTF-8) and return the receiver's ``Ack``, which
    must name the message's control id (MSH-10).

    ``timeout_s`` bounds the connection and, separately, the answer. Connection refused, unreachable or timed out
    raise ``OSError`` (``ConnectionRefusedError``, ``TimeoutError`` ...) and an unreadable answer, or an ACK of
    another message, ``MllpError``: the caller sends again later. A refusal (AE, AR, CE, CR) is an ``Ack`` with
    ``refused`` set, no exception."""
    control_id = _message_control_id(message)
    payload = START_BLOCK + message.encode("utf-8") + END_BLOCK
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.sendall(payload)
        frame = MllpReader(sock).read_frame(deadline=time.monotonic() + timeout_s)
    if frame is None:
        raise MllpError(f"{host}:{port} closed the connection without answering message {control_id}")
    ack = parse_ack(frame)
    if ack.control_id != control_id:
        raise MllpError(f"{host}:{port} acknowledged message {ack.control_id[:20]!r}, not {control_id!r}")
    log.info("message %s to %s:%s: %s", control_id, host, port, ack.code)
    return ack
