"""xraylab: chest X-ray pneumonia triage on Ray Serve.

This shared package holds what every stage imports: typed settings, the database schema,
image preprocessing (one source of truth for training and serving), S3 event parsing, the
typed messages between pipeline stages, risk bands, the model registry and the synthetic
X-ray generator. It imports no Ray, TensorFlow or Gradio at module level.
"""

__version__ = "0.1.0"
