"""Parse raw records into messages, or refuse them with a reason (the ok/err split of all input).

Pure: no I/O, no logging. Parsing never raises, whatever the bytes: every refusal is a ``Rejected``
(a closed ``reason`` and a ``detail`` naming fields and error types, never values, so both are safe to
log and to count), and on the stream a ``DeadLetter`` that points at the record and keeps a bounded
excerpt of it. The worker (``parse_inbound``) and the offline CLI (``check_classify_input``,
``decode_json_object``) share these checks and limits.

Order of the checks, cheapest and most dangerous first: size (before anything is decoded), UTF-8,
nesting depth (before the recursive JSON parser sees it), JSON with no NaN/Infinity and no huge
numbers, lone surrogates in any string, then the schema with its bounds on every field.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from .schemas import (
    DETAIL_MAX_CHARS,
    EXCERPT_MAX_BYTES,
    INBOUND,
    KEY_MAX_CHARS,
    MAX_CONTEXT_TURNS,
    ClassifyInput,
    CorpusSession,
    CorpusUtterance,
    DeadLetter,
    DeadLetterReason,
    InboundMessage,
    SessionEnd,
    SessionStart,
    SilenceCheck,
    Turn,
    Utterance,
)

SPEAKERS = {"therapist", "client"}
# The deepest valid input is a classify line (object > context list > turn object): 3 levels. The
# bound refuses anything that could exhaust the recursive JSON parser long before it gets near.
MAX_JSON_DEPTH = 16
# Digits of a JSON integer: every bounded field fits in 10; int64 in 19. Longer ones are refused
# before Python converts them (a 4,300-digit int costs real time, and more raises).
MAX_INT_DIGITS = 20
# A JSON string can spend 12 bytes on one character (a non-BMP character escaped as a \uXXXX pair),
# so the longest valid utterance is 12 bytes per allowed character plus its bounded ids and numbers.
PAYLOAD_OVERHEAD_BYTES = 16 * 1024


def payload_limit(max_text_chars: int) -> int:
    """Most bytes a valid inbound message can have; larger payloads are refused before decoding."""
    return 12 * max_text_chars + PAYLOAD_OVERHEAD_BYTES


def classify_line_limit(max_text_chars: int) -> int:
    """Most bytes of a classify input line: therapist, client and context texts, plus extra fields."""
    return (2 + MAX_CONTEXT_TURNS) * 12 * max_text_chars + 4 * PAYLOAD_OVERHEAD_BYTES


@dataclass(frozen=True)
class Ok:
    message: Any  # an InboundMessage from parse_inbound, a ClassifyInput from check_classify_input


@dataclass(frozen=True)
class Rejected:
    """Why a record is refused: safe to log (closed reason; field names and error types only)."""
    reason: DeadLetterReason
    detail: str


@dataclass(frozen=True)
class Err:
    dead_letter: DeadLetter


class _Refuse(ValueError):
    """Raised inside the JSON parser's hooks to stop at the first non-standard or huge number."""

    def __init__(self, reason: DeadLetterReason, detail: str):
        super().__init__(detail)
        self.rejected = Rejected(reason, detail)


# ------------------------------------------------------------------------------------- bytes
def as_bytes(raw: object) -> bytes | Rejected:
    """The record's payload as bytes: what the size limit, the digest and the excerpt are taken of."""
    if raw is None:
        return b""  # a Kafka record with a null value (a tombstone): empty, so malformed_json
    if isinstance(raw, (bytes, bytearray, memoryview)):
        return bytes(raw)
    if isinstance(raw, str):
        # surrogatepass keeps a lone surrogate as bytes that the UTF-8 check then refuses.
        return raw.encode("utf-8", "surrogatepass")
    if isinstance(raw, dict):  # records built in process (tests, tools): the same path as the wire
        try:
            return json.dumps(raw, ensure_ascii=False).encode("utf-8", "surrogatepass")
        except RecursionError:
            return Rejected("too_deep", f"nested deeper than {MAX_JSON_DEPTH} levels")
        except (TypeError, ValueError) as exc:
            return Rejected("malformed_json", f"record is not JSON-serializable: {type(exc).__name__}")
    return Rejected("malformed_json", f"unsupported record type {type(raw).__name__}")


def _json_cost(ch: str) -> int:
    """Upper bound of the bytes one character takes in a JSON string (control characters: \\uXXXX)."""
    if ch < " ":
        return 6
    if ch in '"\\':
        return 2
    return len(ch.encode("utf-8", "surrogatepass"))


def bounded_text(text: str, max_bytes: int) -> tuple[str, bool]:
    """The longest prefix of ``text`` whose JSON form fits ``max_bytes``; and whether it was cut."""
    used = 0
    for i, ch in enumerate(text):
        used += _json_cost(ch)
        if used > max_bytes:
            return text[:i], True
    return text, False


def dead_letter(raw: object, rejected: Rejected, *, received_at: float, source_topic: str = "utterances",
                partition: int | None = None, offset: int | None = None, key: str | None = None) -> DeadLetter:
    """The dead letter of one record: a pointer, a digest and a bounded excerpt, never the whole payload."""
    data = as_bytes(raw)
    if isinstance(data, Rejected):
        data = b""  # an in-process record that cannot be serialized: the pointer is all there is
    excerpt, cut = bounded_text(data[:EXCERPT_MAX_BYTES].decode("utf-8", "replace"), EXCERPT_MAX_BYTES)
    if key is not None:
        key = bounded_text(key.encode("utf-8", "surrogatepass").decode("utf-8", "replace"), KEY_MAX_CHARS)[0]
    return DeadLetter(reason=rejected.reason, detail=rejected.detail[:DETAIL_MAX_CHARS],
                      source_topic=source_topic[:KEY_MAX_CHARS], partition=partition, offset=offset, key=key,
                      payload=excerpt, payload_truncated=cut or len(data) > EXCERPT_MAX_BYTES,
                      payload_bytes=len(data), payload_sha256=hashlib.sha256(data).hexdigest(),
                      received_at=received_at)


# -------------------------------------------------------------------------------------- JSON
# A JSON string (to its closing quote, or to the end of malformed input: the match never fails, so the
# scan is linear) or a bracket outside strings.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)


def nesting_depth_exceeds(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when brackets outside strings nest deeper than ``limit`` (checked before parsing)."""
    if text.count("[") + text.count("{") <= limit:
        return False  # too few brackets to nest that deep: the usual case, no scan
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        tok = m.group()
        if tok == "[" or tok == "{":
            depth += 1
            if depth > limit:
                return True
        elif tok == "]" or tok == "}":
            depth -= 1
    return False


def _no_constants(name: str):
    raise _Refuse("malformed_json", f"{name} is not JSON")


def _finite_float(s: str) -> float:
    value = float(s)
    if not math.isfinite(value):
        raise _Refuse("schema_error", "number out of range")
    return value


def _bounded_int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise _Refuse("schema_error", "integer out of range")
    return int(s)


def _allow_constant(name: str) -> float:
    return float(name)  # "NaN", "Infinity", "-Infinity"


# Built once: json.loads with hooks builds a new decoder on every call.
_DECODERS = {allow_non_finite: json.JSONDecoder(
    parse_float=_finite_float, parse_int=_bounded_int,
    parse_constant=_allow_constant if allow_non_finite else _no_constants) for allow_non_finite in (False, True)}


_SURROGATE = re.compile("[\ud800-\udfff]")
# Text decoded from UTF-8 holds no surrogate, so the parsed object can only get one from a JSON escape
# \uD800-\uDFFF: without such an escape in the text the walk over every string is skipped.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _first_lone_surrogate(obj: object) -> str | None:
    """Top-level field holding a string (or key) that cannot be encoded as UTF-8; None when all can."""
    top = obj if isinstance(obj, dict) else {"": obj}
    for field, value in top.items():
        stack = [field, value]
        while stack:
            v = stack.pop()
            if isinstance(v, str):
                if _SURROGATE.search(v):
                    return str(field) if not _SURROGATE.search(str(field)) else ""
            elif isinstance(v, dict):
                stack.extend(v.keys())
                stack.extend(v.values())
            elif isinstance(v, list):
                stack.extend(v)
    return None


def decode_json_object(data: bytes, *, max_bytes: int, allow_non_finite: bool = False) -> dict | Rejected:
    """Bytes -> a JSON object, or why not. Never raises.

    ``allow_non_finite`` admits NaN/Infinity (some corpus files carry them in metadata nobody reads);
    the fields that are read are still refused non-finite values by their schema."""
    if len(data) > max_bytes:
        return Rejected("oversized_payload", f"{len(data)} bytes, limit {max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected("invalid_encoding", f"not UTF-8 at byte {exc.start}")
    if nesting_depth_exceeds(text):
        return Rejected("too_deep", f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        obj = _DECODERS[allow_non_finite].decode(text)
    except _Refuse as exc:
        return exc.rejected
    except RecursionError:  # the depth scan should have caught it; the parser's own guard is the last line
        return Rejected("too_deep", f"nested deeper than {MAX_JSON_DEPTH} levels")
    except ValueError as exc:  # JSONDecodeError: position only, never the text around it
        return Rejected("malformed_json", f"not JSON: {type(exc).__name__} at pos {getattr(exc, 'pos', '?')}")
    if not isinstance(obj, dict):
        return Rejected("malformed_json", f"expected a JSON object, got {type(obj).__name__}")
    field = _first_lone_surrogate(obj) if _SURROGATE_ESCAPE.search(text) else None
    if field is not None:
        return Rejected("invalid_encoding", f"{_safe_name(field)}: lone surrogate, not encodable as UTF-8")
    return obj


# ------------------------------------------------------------------------------------ schema
_MODELS: tuple[type[BaseModel], ...] = (Utterance, SessionStart, SessionEnd, SilenceCheck, ClassifyInput, Turn,
                                         CorpusSession, CorpusUtterance)
# Names that may appear in a detail: the models' own fields and message tags. Anything else in an
# error location is a key chosen by the sender (possibly text, possibly huge) and is masked.
_KNOWN_NAMES = frozenset({"type", "utterance", "session_start", "session_end", "silence_check"}.union(
    *(m.model_fields for m in _MODELS)))
_MAX_ERRORS_IN_DETAIL = 8


def _safe_name(part: object) -> str:
    if isinstance(part, int):
        return str(part)
    return part if part in _KNOWN_NAMES else "<other field>"


def field_paths(exc: ValidationError) -> str:
    # Only field locations and error types: the offending values may be transcript text.
    parts = list(dict.fromkeys(f"{'.'.join(_safe_name(p) for p in e['loc'])}: {e['type']}"
                               for e in exc.errors(include_url=False, include_input=False)))
    more = len(parts) - _MAX_ERRORS_IN_DETAIL
    detail = "; ".join(parts[:_MAX_ERRORS_IN_DETAIL]) + (f"; and {more} more" if more > 0 else "")
    return detail[:DETAIL_MAX_CHARS]


def _text_problem(name: str, text: object, max_text_chars: int) -> Rejected | None:
    if isinstance(text, str) and len(text) > max_text_chars:
        return Rejected("oversized_text", f"{name} has {len(text)} chars, limit {max_text_chars}")
    return None


def check_inbound(obj: dict, *, max_text_chars: int) -> Ok | Rejected:
    """A decoded JSON object -> an inbound message (utterance, session marker, silence check)."""
    obj = dict(obj)  # never mutate the caller's record
    obj.setdefault("type", "utterance")
    if obj["type"] == "utterance":
        # Non-string speakers (lists, objects) fall through to the schema check below.
        if isinstance(obj.get("speaker"), str) and obj["speaker"] not in SPEAKERS:
            return Rejected("unknown_speaker", "speaker must be 'therapist' or 'client'")
        too_long = _text_problem("text", obj.get("text"), max_text_chars)
        if too_long:
            return too_long
    try:
        message: InboundMessage = INBOUND.validate_python(obj)
    except ValidationError as exc:
        return Rejected("schema_error", field_paths(exc))
    if isinstance(message, Utterance) and not message.text.strip():
        return Rejected("schema_error", "text: empty")
    return Ok(message)


def check_classify_input(obj: dict, *, max_text_chars: int) -> Ok | Rejected:
    """A decoded classify line -> ClassifyInput, with the worker's text limit on every text."""
    texts = [("therapist", obj.get("therapist")), ("client", obj.get("client"))]
    if isinstance(obj.get("context"), list):
        texts += [(f"context.{i}.text", t.get("text")) for i, t in enumerate(obj["context"]) if isinstance(t, dict)]
    for name, text in texts:
        too_long = _text_problem(name, text, max_text_chars)
        if too_long:
            return too_long
    try:
        item = ClassifyInput.model_validate(obj)
    except ValidationError as exc:
        return Rejected("schema_error", field_paths(exc))
    if not item.therapist.strip():
        return Rejected("schema_error", "therapist: empty")
    return Ok(item)


def _guarded(check, *args, **kwargs) -> Ok | Rejected:
    try:
        return check(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - parsing never raises: an unforeseen failure is a refusal
        return Rejected("schema_error", f"validation failed: {type(exc).__name__}")


def parse_line(data: bytes, check, *, max_bytes: int, max_text_chars: int,
               allow_non_finite: bool = False) -> Ok | Rejected:
    """One offline input line -> ``check``'s result, with the stream's decoding rules. Never raises."""
    def run():
        obj = decode_json_object(data, max_bytes=max_bytes, allow_non_finite=allow_non_finite)
        return obj if isinstance(obj, Rejected) else check(obj, max_text_chars=max_text_chars)
    return _guarded(run)


def parse_inbound(raw: bytes | str | dict | None, *, max_text_chars: int, received_at: float,
                  source_topic: str = "utterances", partition: int | None = None,
                  offset: int | None = None, key: str | None = None) -> Ok | Err:
    """One ``utterances`` record -> Ok(message) or Err(dead letter). Never raises, for any input."""
    def run() -> Ok | Rejected:
        data = as_bytes(raw)
        if isinstance(data, Rejected):
            return data
        obj = decode_json_object(data, max_bytes=payload_limit(max_text_chars))
        return obj if isinstance(obj, Rejected) else check_inbound(obj, max_text_chars=max_text_chars)

    result = _guarded(run)
    if isinstance(result, Ok):
        return result
    return Err(dead_letter(raw, result, received_at=received_at, source_topic=source_topic,
                           partition=partition, offset=offset, key=key))
