"""The doctors' review app (Gradio): risk-ordered worklist and one study's image with its prediction."""
