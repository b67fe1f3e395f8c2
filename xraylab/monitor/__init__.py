"""The model monitor: health, image drift, prediction drift and performance of each served model version."""
