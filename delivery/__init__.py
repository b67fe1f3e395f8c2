"""Results back where radiologists work: DICOM SR and a Grad-CAM picture stored into the PACS the study came from,
HL7 v2.5 ORU^R01 messages to each hospital's RIS, through the database outbox (``xraylab.db.outbox``)."""
