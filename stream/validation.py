"""Parse raw ``utterances`` records into messages, or into dead letters (the ok/err split).

Pure: no I/O, no logging. A dead letter keeps the raw payload (so nothing is lost and it can be
replayed once fixed) and a reason that is safe to log and to use as a metric label.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from pydantic import ValidationError

from .schemas import INBOUND, DeadLetter, InboundMessage, Utterance

SPEAKERS = {"therapist", "client"}


@dataclass(frozen=True)
class Ok:
    message: InboundMessage


@dataclass(frozen=True)
class Err:
    dead_letter: DeadLetter


def _field_paths(exc: ValidationError) -> str:
    # Only field locations and error types: the offending values may be transcript text.
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['type']}" for e in exc.errors())


def parse_inbound(raw: bytes | str | dict, *, max_text_chars: int, received_at: float,
                  source_topic: str = "utterances", partition: int | None = None,
                  offset: int | None = None, key: str | None = None) -> Ok | Err:
    payload = raw if isinstance(raw, str) else (
        json.dumps(raw) if isinstance(raw, dict) else raw.decode("utf-8", errors="replace"))

    def err(reason: str, detail: str) -> Err:
        return Err(DeadLetter(reason=reason, detail=detail, source_topic=source_topic,
                              partition=partition, offset=offset, key=key, payload=payload,
                              payload_sha256=hashlib.sha256(payload.encode()).hexdigest(),
                              received_at=received_at))

    if isinstance(raw, dict):
        obj = dict(raw)  # never mutate the caller's record
    else:
        try:
            obj = json.loads(payload)
        except ValueError as exc:
            return err("malformed_json", f"not JSON: {type(exc).__name__} at pos {getattr(exc, 'pos', '?')}")
    if not isinstance(obj, dict):
        return err("malformed_json", f"expected a JSON object, got {type(obj).__name__}")
    obj.setdefault("type", "utterance")
    if obj["type"] == "utterance":
        # Non-string speakers (lists, objects) fall through to the schema check below.
        if isinstance(obj.get("speaker"), str) and obj["speaker"] not in SPEAKERS:
            return err("unknown_speaker", "speaker must be 'therapist' or 'client'")
        text = obj.get("text")
        if isinstance(text, str) and len(text) > max_text_chars:
            return err("oversized_text", f"text has {len(text)} chars, limit {max_text_chars}")
    try:
        message = INBOUND.validate_python(obj)
    except ValidationError as exc:
        return err("schema_error", _field_paths(exc))
    if isinstance(message, Utterance) and not message.text.strip():
        return err("schema_error", "text: empty")
    return Ok(message)
