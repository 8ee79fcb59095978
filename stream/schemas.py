"""The one schema module: wire messages (JSON on Kafka), CLI records and the classes.

Every message on the ``utterances`` topic carries ``type`` so that utterances, session markers and the
worker's own silence checks share one ordered, per-session partition. ``homework-monitor export-schemas``
exports JSON Schema for each message (committed under ``schemas/``).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from homework_monitor.contract import CLASSES, HOMEWORK_CLASSES, NONE

__all__ = ["CLASSES", "HOMEWORK_CLASSES", "NONE"]  # re-exported: the wire schemas' class vocabulary
Speaker = Literal["therapist", "client"]
Category = Literal["practice", "take_action", "journal", "learn", "none"]
HomeworkCategory = Literal["practice", "take_action", "journal", "learn"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SessionMeta(_Frozen):
    therapist_id: str | None = None
    client_id: str | None = None
    program_id: str | None = None
    scheduled_minutes: int | None = Field(None, ge=0)


class Utterance(SessionMeta):
    """One diarized utterance. ``seq`` is its 0-based index in the session and must increase."""
    type: Literal["utterance"] = "utterance"
    session_id: str = Field(min_length=1, max_length=200)
    seq: int = Field(ge=0)
    speaker: Speaker
    text: str
    start_s: float | None = None
    end_s: float | None = None


class SessionStart(SessionMeta):
    type: Literal["session_start"] = "session_start"
    session_id: str = Field(min_length=1, max_length=200)
    start_s: float | None = None


class SessionEnd(_Frozen):
    """Closes a session; ``n_utterances`` lets the worker see a gap before it summarises."""
    type: Literal["session_end"] = "session_end"
    session_id: str = Field(min_length=1, max_length=200)
    n_utterances: int = Field(ge=0)
    end_s: float | None = None


class SilenceCheck(_Frozen):
    """Sent by the worker's own timer: flush a turn left waiting longer than the silence limit."""
    type: Literal["silence_check"] = "silence_check"
    session_id: str = Field(min_length=1, max_length=200)
    at: float


InboundMessage = Annotated[Utterance | SessionStart | SessionEnd | SilenceCheck,
                           Field(discriminator="type")]
INBOUND = TypeAdapter(InboundMessage)


class Turn(_Frozen):
    speaker: Speaker
    text: str


class HomeworkEvent(_Frozen):
    event_id: str
    session_id: str
    therapist_id: str | None
    program_id: str | None = None
    turn: int  # seq of the first utterance of the therapist turn
    category: HomeworkCategory
    confidence: float
    scores: dict[str, float]
    quote: str
    start_s: float | None
    trigger_seq: int | None = None  # the utterance that completed the microdialogue (latency)
    emitted_at: float
    model_version: str


class Assignment(_Frozen):
    turn: int
    category: HomeworkCategory
    confidence: float
    start_s: float | None
    quote: str


class SessionSummary(_Frozen):
    summary_id: str
    session_id: str
    therapist_id: str | None = None
    client_id: str | None = None
    program_id: str | None = None
    homework_assigned: bool
    categories: list[HomeworkCategory]
    assignments: list[Assignment]
    n_utterances: int
    n_microdialogues: int
    missing_utterances: int = 0
    duration_s: float | None = None
    emitted_at: float
    model_version: str


class DeadLetter(_Frozen):
    """A rejected input. ``payload`` keeps the raw bytes so nothing is lost; it is never logged."""
    reason: Literal["malformed_json", "schema_error", "unknown_speaker", "oversized_text"]
    detail: str
    source_topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    payload: str
    payload_sha256: str
    received_at: float


class ClassifyInput(BaseModel):
    """``homework-monitor classify`` input line; extra fields (labels...) are ignored."""
    model_config = ConfigDict(extra="ignore")
    id: str
    context: list[Turn] = Field(default_factory=list)
    therapist: str
    client: str | None = None


class ClassifyOutput(_Frozen):
    id: str
    label: Category
    scores: dict[str, float]


def stable_id(*parts: object) -> str:
    """Deterministic id: the same input gives the same id on redelivery or replay."""
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]


SCHEMAS: dict[str, type[BaseModel]] = {
    "utterance": Utterance, "session_start": SessionStart, "session_end": SessionEnd,
    "silence_check": SilenceCheck, "homework_event": HomeworkEvent,
    "session_summary": SessionSummary, "dead_letter": DeadLetter,
    "classify_input": ClassifyInput, "classify_output": ClassifyOutput,
}


def export_json_schemas(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in SCHEMAS.items():
        path = out_dir / f"{name}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
