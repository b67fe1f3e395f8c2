"""xraylab: chest X-ray pneumonia triage on Ray Serve.

This shared package holds what every stage imports: typed settings, the database schema,
image preprocessing (one source of truth for training and serving), S3 event parsing,
risk bands and the model registry. It imports no Ray, TensorFlow or Gradio at module level.
"""

__version__ = "0.1.0"
