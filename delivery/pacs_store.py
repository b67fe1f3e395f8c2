"""Results into a PACS by C-STORE (pynetdicom), one association per study's results, with each failure sorted into
what a later try can fix (``TransientDeliveryError``: the PACS down, busy or out of resources, an association
rejected as transient) and what it cannot (``RefusedDeliveryError``: the association rejected for good, such as an
AE title the PACS does not know, or an instance refused as invalid). Warnings (0xB000, 0xB007, 0xB006) are
stored instances. Messages name instances by SOP Instance UID, never a patient."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pydicom import Dataset

from xraylab.delivery_config import PacsDestination

__all__ = ["store_results", "TransientDeliveryError", "RefusedDeliveryError"]

log = logging.getLogger("xraylab.delivery.pacs")


class TransientDeliveryError(RuntimeError):
    """The destination could not take the result now: try again later."""


class RefusedDeliveryError(RuntimeError):
    """The destination refused the result for good: set it aside with this reason. ``code`` names the kind of
    refusal for logs and metrics (the message may quote the receiver's own text)."""

    def __init__(self, message: str, code: str = "refused") -> None:
        super().__init__(message)
        self.code = code


def store_results(datasets: Sequence[Dataset], destination: PacsDestination) -> None:
    """C-STORE ``datasets`` (each with its file meta) to the PACS in one association; every one must be stored."""
    from pynetdicom import AE

    ae = AE(ae_title=destination.calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = destination.timeout_s
    for context in sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID)) for ds in datasets}):
        ae.add_requested_context(*context)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    where = f"{destination.ae_title}@{destination.host}:{destination.port}"
    if not assoc.is_established:
        answer = getattr(getattr(assoc.acceptor, "primitive", None), "result", None)
        if assoc.is_rejected and answer == 0x01:
            raise RefusedDeliveryError(f"{where} rejected the association from {destination.calling_ae_title} for "
                                       "good: register this AE title (and host) on the PACS", "association_rejected")
        what = "rejected the association for now" if assoc.is_rejected else "did not answer or aborted"
        raise TransientDeliveryError(f"{where} {what}")
    try:
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        refused = sorted({str(ds.SOPClassUID) for ds in datasets} - accepted)
        if refused:
            raise RefusedDeliveryError(f"{where} does not accept SOP class(es) {', '.join(refused)} from "
                                       f"{destination.calling_ae_title}", "sop_class_refused")
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = getattr(status, "Status", None) if status else None
            if code is None:
                raise TransientDeliveryError(f"{where}: no answer to the C-STORE of {ds.SOPInstanceUID}")
            if code == 0x0000 or 0xB000 <= code <= 0xBFFF:  # success, or stored with a warning
                continue
            if 0xA700 <= code <= 0xA7FF:  # out of resources
                raise TransientDeliveryError(f"{where} is out of resources (0x{code:04X})")
            comment = str(status.get("ErrorComment", ""))[:120]
            raise RefusedDeliveryError(f"{where} refused {ds.SOPInstanceUID} (0x{code:04X})"
                                       + (f": {comment}" if comment else ""), "instance_refused")
    finally:
        if assoc.is_established:
            assoc.release()
    log.info("stored %d result instances at %s", len(datasets), where)
