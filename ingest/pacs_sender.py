"""The simulated modality: sends DICOM files to the PACS by C-STORE (pynetdicom), as an X-ray room does.

One association carries a whole batch; each instance must come back with status 0x0000 (Success) or the send
fails with the PACS's status, naming the instance by its SOP Instance UID (never the patient)."""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from xraylab.settings import Settings

__all__ = ["PacsTarget", "PacsSendError", "send_to_pacs"]

log = logging.getLogger("xraylab.pacs_sender")


class PacsSendError(RuntimeError):
    """The PACS refused the association or an instance."""


@dataclass(frozen=True)
class PacsTarget:
    host: str
    port: int
    called_aet: str
    calling_aet: str
    timeout_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> PacsTarget:
        return cls("127.0.0.1", settings.ORTHANC_DICOM_PORT, settings.ORTHANC_AET, settings.MODALITY_AET)


def send_to_pacs(files: Sequence[bytes], target: PacsTarget) -> list[str]:
    """C-STORE every DICOM file in one association; their SOP Instance UIDs, in order."""
    import pydicom
    from pynetdicom import AE

    datasets = [pydicom.dcmread(io.BytesIO(data)) for data in files]
    if not datasets:
        return []
    ae = AE(ae_title=target.calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = target.timeout_s
    contexts = sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets})
    if len(contexts) > 128:
        raise ValueError("more than 128 SOP class and transfer syntax pairs in one batch")
    for sop_class, syntax in contexts:
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate(target.host, target.port, ae_title=target.called_aet)
    if not assoc.is_established:
        how = "rejected" if assoc.is_rejected else "aborted or unanswered"
        raise PacsSendError(f"the PACS at {target.host}:{target.port} ({target.called_aet}) {how} the association "
                            f"from {target.calling_aet}: is this AE title registered there, from this host?")
    sent = []
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None)
            if code != 0x0000:
                raise PacsSendError(f"C-STORE of instance {ds.SOPInstanceUID} answered status "
                                    f"{'none (association lost)' if code is None else hex(code)}")
            sent.append(str(ds.SOPInstanceUID))
    finally:
        if assoc.is_established:
            assoc.release()
    log.info("sent %d instances to the PACS %s at %s:%d", len(sent), target.called_aet, target.host, target.port)
    return sent
