"""The model contract, in one place: classes, Triton tensor names, the model's input, the classifier port.

The stream, the Triton client, the Triton python model, the in-process classifier and training all
import these names; the worker checks the served model against them at start-up
(``TritonClassifier.start``) and the artifact loader checks its class order (``homework_monitor.model``).
Pure: standard library and numpy only.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

CLASSES: tuple[str, ...] = ("practice", "take_action", "journal", "learn", "none")
HOMEWORK_CLASSES: tuple[str, ...] = CLASSES[:-1]
NONE = "none"

# Triton: the served model's name and tensors (BYTES inputs of shape [batch, 1], FP32 output [batch, 5]).
MODEL_NAME = "homework_classifier"
INPUT_THERAPIST = "THERAPIST"
INPUT_CLIENT = "CLIENT"
INPUT_CONTEXT = "CONTEXT"  # JSON list of {"speaker", "text"}, oldest first
INPUTS: tuple[str, ...] = (INPUT_THERAPIST, INPUT_CLIENT, INPUT_CONTEXT)
OUTPUT_PROBS = "PROBS"  # probabilities in CLASSES order
INPUT_DATATYPE = "BYTES"  # TYPE_STRING in config.pbtxt
OUTPUT_DATATYPE = "FP32"
# config.pbtxt carries the class order as this parameter; the worker refuses a model whose order differs.
CLASSES_PARAMETER = "classes"


class ContractMismatch(RuntimeError):
    """A served model or artifact does not match this contract: running on it would mislabel events."""


def check_classes(found: Sequence[str], where: str) -> None:
    if tuple(found) != CLASSES:
        raise ContractMismatch(f"{where}: classes {tuple(found)} != contract {CLASSES}")


@dataclass(frozen=True)
class Example:
    """What the model sees of a microdialogue: the therapist turn, the client's reply (or None) and
    up to a few turns of context as (speaker, text) pairs, oldest first."""
    therapist: str
    client: str | None = None
    context: tuple[tuple[str, str], ...] = ()


class Classifier(Protocol):
    """The classifier port: ``classify(examples) -> [n, len(CLASSES)]`` probabilities in CLASSES order."""
    model_version: str

    async def start(self) -> None: ...
    async def classify(self, items: Sequence[Example]) -> np.ndarray: ...
    async def close(self) -> None: ...
