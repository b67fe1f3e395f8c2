"""Training: the Kaggle-layout data set loader, model architectures, Ray Train jobs, evaluation and
publishing to the registry, and the bootstrap model."""
