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

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from homework_monitor.contract import CLASSES, HOMEWORK_CLASSES, NONE

__all__ = ["CLASSES", "HOMEWORK_CLASSES", "NONE"]  # re-exported: the wire schemas' class vocabulary
Speaker = Literal["therapist", "client"]
Category = Literal["practice", "take_action", "journal", "learn", "none"]
HomeworkCategory = Literal["practice", "take_action", "journal", "learn"]


# --- bounds on every inbound field ----------------------------------------------------------------
# Ids name sessions, therapists, clients and programs; they are not free text. A short closed character
# set keeps them safe as Kafka keys, table keys, file names and log fields, and keeps every message
# that carries them small (a 1.2 MB therapist_id once became an event, a summary and a table record).
ID_MAX_CHARS = 128
ID_PATTERN = r"^[A-Za-z0-9._:#@/+=-]+$"
Id = Annotated[str, StringConstraints(min_length=1, max_length=ID_MAX_CHARS, pattern=ID_PATTERN)]
# Counts of utterances (seq, n_utterances, and what the worker derives from them: last_seq,
# missing_utterances) stay within a signed 32-bit int, so that every consumer of events, summaries and
# table records (Java/Avro/SQL ``int``) reads them as sent. A real session has a few thousand
# utterances; a seq of 2**63 used to silence the rest of its session and overflow missing_utterances.
MAX_UTTERANCES = 2**31 - 1
# Numbers are strict: JSON true/false or 3.0 is not a seq.
Seq = Annotated[int, Field(ge=0, lt=MAX_UTTERANCES, strict=True)]
Count = Annotated[int, Field(ge=0, le=MAX_UTTERANCES, strict=True)]
# Offsets in seconds from the start of the recording: finite, and no session lasts a week.
MAX_OFFSET_S = 7 * 24 * 3600.0
Offset = Annotated[float, Field(ge=0, le=MAX_OFFSET_S, allow_inf_nan=False, strict=True)]
# Wall-clock seconds since the epoch (the worker's silence checks): finite, before the year 2286.
Epoch = Annotated[float, Field(ge=0, le=1e10, allow_inf_nan=False, strict=True)]
MAX_SCHEDULED_MINUTES = 24 * 60
# The classifier sees up to ``context_turns`` (3) turns; offline inputs may carry a few more.
MAX_CONTEXT_TURNS = 16


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SessionMeta(_Frozen):
    therapist_id: Id | None = None
    client_id: Id | None = None
    program_id: Id | None = None
    scheduled_minutes: int | None = Field(None, ge=0, le=MAX_SCHEDULED_MINUTES, strict=True)


class Utterance(SessionMeta):
    """One diarized utterance. ``seq`` is its 0-based index in the session and must increase.

    ``text`` is bounded by ``HWM_MAX_TEXT_CHARS`` (checked in ``validation``, where the limit is known)."""
    type: Literal["utterance"] = "utterance"
    session_id: Id
    seq: Seq
    speaker: Speaker
    text: str
    start_s: Offset | None = None
    end_s: Offset | None = None


class SessionStart(SessionMeta):
    type: Literal["session_start"] = "session_start"
    session_id: Id
    start_s: Offset | None = None
    # The client's consent to monitoring. False: the worker processes and stores nothing of the session
    # but a counter. None (not sent): processed unless HWM_REQUIRE_CONSENT is set (docs/NUDGES.md).
    consent: bool | None = Field(None, strict=True)


class SessionEnd(_Frozen):
    """Closes a session; ``n_utterances`` lets the worker see a gap before it summarises."""
    type: Literal["session_end"] = "session_end"
    session_id: Id
    n_utterances: Count
    end_s: Offset | None = None


class SilenceCheck(_Frozen):
    """Sent by the worker's own timer: flush a turn left waiting longer than the silence limit."""
    type: Literal["silence_check"] = "silence_check"
    session_id: Id
    at: Epoch


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
    client_id: str | None = None
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


class Review(_Frozen):
    """A therapist turn that reviews homework assigned in an earlier session (asks how it went)."""
    turn: int
    start_s: float | None
    quote: str
    source: Literal["model", "rule"]  # the model's review output, or the documented keyword rule


class SessionSummary(_Frozen):
    summary_id: str
    session_id: str
    therapist_id: str | None = None
    client_id: str | None = None
    program_id: str | None = None
    scheduled_minutes: int | None = None
    started_at: float | None = None  # wall clock (epoch s) when the worker saw the session's first message
    homework_assigned: bool
    categories: list[HomeworkCategory]
    assignments: list[Assignment]
    # Charting-ready homework section (categories, the therapist's words, when); "No homework assigned
    # this session." when there is none. Built by aggregation.charting_note, online and offline alike.
    note: str
    # Cross-session follow-up (per client_id): the client's previous session, whether it had homework,
    # and whether this session reviewed it. None when unknown (no client_id or no previous session).
    previous_session_id: str | None = None
    previous_homework: list[Assignment] = Field(default_factory=list)
    previous_homework_reviewed: bool | None = None
    reviews: list[Review] = Field(default_factory=list)
    n_utterances: int
    n_microdialogues: int
    missing_utterances: int = 0
    duration_s: float | None = None
    emitted_at: float
    model_version: str


NudgeRule = Literal["no_homework_yet", "review_previous", "not_yet_reviewed"]


class Nudge(_Frozen):
    """An in-session prompt to the therapist (``nudges`` topic), fired at most once per rule per session.

    ``message`` is fixed wording per rule (no transcript text). ``previous_assignments`` (review rules
    only) carries the previous session's categories and quotes: PHI, so the topic is restricted like
    ``homework-events`` and only session views show it."""
    nudge_id: str  # stable_id("nudge", session_id, rule): redelivery gives the same id
    session_id: str
    therapist_id: str | None = None
    client_id: str | None = None
    program_id: str | None = None
    rule: NudgeRule
    message: str
    session_time_s: float | None  # seconds into the session when the rule fired
    previous_session_id: str | None = None
    previous_assignments: list[Assignment] = Field(default_factory=list)
    emitted_at: float


class SessionOpened(_Frozen):
    """The worker saw a session's first message (``session-opened`` topic): feeds the live session list.

    Ids and times only, no text. A session without consent is never announced."""
    session_id: str
    therapist_id: str | None = None
    client_id: str | None = None
    program_id: str | None = None
    scheduled_minutes: int | None = None
    started_at: float  # wall clock (epoch s)
    start_s: float | None = None  # the session's own clock at its first message
    emitted_at: float


# Why an input was refused: a closed vocabulary, safe as a metric label and in logs.
DeadLetterReason = Literal[
    "malformed_json",     # not JSON, not a JSON object, or NaN/Infinity (not JSON either)
    "invalid_encoding",   # not UTF-8, or a string holding a lone surrogate (cannot be encoded)
    "too_deep",           # nested deeper than validation.MAX_JSON_DEPTH
    "oversized_payload",  # more bytes than any valid message can have (validation.payload_limit)
    "schema_error",       # a field missing, unexpected, of the wrong type or out of bounds
    "unknown_speaker",    # speaker other than therapist/client
    "oversized_text",     # text longer than HWM_MAX_TEXT_CHARS
    "processing_error",   # applying this one record failed (detail: the exception type only)
    "seq_gap",            # seq jumps further ahead of its session than HWM_MAX_SEQ_GAP allows
]
DETAIL_MAX_CHARS = 512
KEY_MAX_CHARS = 256
EXCERPT_MAX_BYTES = 2048


class DeadLetter(_Frozen):
    """A rejected input: why, where it came from, and a bounded excerpt of it.

    Bounded: a dead letter never repeats an unbounded payload. It points at the original record
    (``source_topic``/``partition``/``offset``/``key``) and keeps its size, its SHA-256 and the first
    ``EXCERPT_MAX_BYTES`` of it as valid UTF-8 (invalid bytes replaced), so a serialized dead letter
    stays under about 4 KiB whatever came in, far below the broker's 1 MB default message limit.
    While the source topic still retains the record, the pointer and the digest recover it exactly;
    when ``payload_truncated`` is false the excerpt is the whole payload (invalid UTF-8 bytes replaced).

    Who reads it: ``reason`` and ``detail`` are safe to log and to count (field names and error types
    only, never values). The ``payload`` excerpt and the ``key`` can hold transcript text (protected
    health information): the dead-letter topic is restricted like ``utterances`` itself, readable only
    by the operators who triage bad input, and its records are never logged.
    """
    reason: DeadLetterReason
    detail: str = Field(max_length=DETAIL_MAX_CHARS)
    source_topic: str = Field(max_length=KEY_MAX_CHARS)
    partition: int | None = None
    offset: int | None = None
    key: str | None = Field(None, max_length=KEY_MAX_CHARS,
                            description="the record's key, truncated to KEY_MAX_CHARS characters")
    payload: str = Field(max_length=EXCERPT_MAX_BYTES,
                         description="the first EXCERPT_MAX_BYTES of the raw payload, as valid UTF-8")
    payload_truncated: bool = Field(description="true when payload is not the whole raw payload")
    payload_bytes: int = Field(ge=0, description="size of the raw payload in bytes")
    payload_sha256: str = Field(description="SHA-256 of the raw payload bytes")
    received_at: float


class ClassifyInput(BaseModel):
    """``homework-monitor classify`` input line; extra fields (labels...) are ignored.

    Texts are bounded by ``HWM_MAX_TEXT_CHARS`` like the worker's utterances (``validation``)."""
    model_config = ConfigDict(extra="ignore")
    id: Id
    context: list[Turn] = Field(default_factory=list, max_length=MAX_CONTEXT_TURNS)
    therapist: str
    client: str | None = None


class CorpusUtterance(BaseModel):
    """One utterance of a corpus session line; other speakers than therapist/client are skipped offline."""
    model_config = ConfigDict(extra="ignore")
    speaker: str
    text: str
    start_s: float | None = None
    end_s: float | None = None


class CorpusSession(BaseModel):
    """``homework-monitor summarize/review`` input line: one whole session (the shared corpus schema).

    Each utterance becomes a wire ``Utterance`` and is validated exactly as the worker validates it."""
    model_config = ConfigDict(extra="ignore")
    session_id: Id
    utterances: list[CorpusUtterance] = Field(max_length=MAX_UTTERANCES)
    meta: dict | None = None


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
    "session_summary": SessionSummary, "dead_letter": DeadLetter, "nudge": Nudge,
    "session_opened": SessionOpened,
    "classify_input": ClassifyInput, "classify_output": ClassifyOutput, "corpus_session": CorpusSession,
}


def export_json_schemas(out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in SCHEMAS.items():
        path = out_dir / f"{name}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
