"""Training: synthetic data, model architectures, and (later) Ray Train jobs."""
