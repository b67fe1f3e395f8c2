"""Getting images in: the hospital-side uploader, the SeaweedFS->Kafka notifier, and the Kafka ingest actor."""
