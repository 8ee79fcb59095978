"""The Triton model repository, shipped as package data so an installed wheel carries the served model.

Start tritonserver with ``--model-control-mode=explicit --load-model=homework_classifier`` so this
file and any ``__pycache__`` beside it are never taken for models.
"""
from pathlib import Path

MODEL_REPOSITORY = Path(__file__).resolve().parent
SERVED_ARTIFACT = MODEL_REPOSITORY / "homework_classifier" / "1" / "artifact"
