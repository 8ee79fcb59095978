"""Raw records -> Ok(message) or Err(dead letter): the ok/err split of the worker's input."""
from __future__ import annotations

import hashlib
import json

import pytest

from homework_monitor.stream.schemas import SessionEnd, SessionStart, SilenceCheck, Utterance
from homework_monitor.stream.validation import Err, Ok, parse_inbound

LIMIT = 200
SECRET = "Zebra-Quartz my sister's name is Philippa"  # distinctive text that must never leak


def parse(raw, **kw):
    return parse_inbound(raw, max_text_chars=kw.pop("max_text_chars", LIMIT), received_at=123.0, **kw)


def utterance(**fields) -> dict:
    return {"type": "utterance", "session_id": "s1", "seq": 0, "speaker": "client",
            "text": "I slept better.", **fields}


def dead(raw, **kw):
    result = parse(raw, **kw)
    assert isinstance(result, Err), result
    return result.dead_letter


# ------------------------------------------------------------------------------------- valid
def test_valid_utterance_is_ok():
    result = parse(json.dumps(utterance(start_s=1.5)).encode())
    assert isinstance(result, Ok)
    assert result.message == Utterance(session_id="s1", seq=0, speaker="client", text="I slept better.",
                                       start_s=1.5)


def test_type_defaults_to_utterance():
    raw = utterance()
    del raw["type"]
    result = parse(json.dumps(raw))
    assert isinstance(result, Ok) and isinstance(result.message, Utterance)


@pytest.mark.parametrize("message", [
    SessionStart(session_id="s1", therapist_id="th-1", scheduled_minutes=50),
    SessionEnd(session_id="s1", n_utterances=12, end_s=3000.0),
    SilenceCheck(session_id="s1", at=99.5),
])
def test_session_markers_and_silence_checks_are_ok(message):
    result = parse(message.model_dump_json().encode())
    assert isinstance(result, Ok) and result.message == message


def test_dict_input_is_accepted():
    assert isinstance(parse(utterance()), Ok)


def test_text_exactly_at_the_limit_is_ok():
    assert isinstance(parse(json.dumps(utterance(text="x" * LIMIT))), Ok)


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("raw, reason", [
    (b"{not json", "malformed_json"),
    (b"", "malformed_json"),
    (b"[1, 2, 3]", "malformed_json"),
    (b'"just a string"', "malformed_json"),
    (b"42", "malformed_json"),
    (json.dumps(utterance(speaker="narrator")).encode(), "unknown_speaker"),
    (json.dumps({k: v for k, v in utterance().items() if k != "seq"}).encode(), "schema_error"),
    (json.dumps({k: v for k, v in utterance().items() if k != "text"}).encode(), "schema_error"),
    (json.dumps(utterance(seq=-1)).encode(), "schema_error"),
    (json.dumps(utterance(session_id="")).encode(), "schema_error"),
    (json.dumps(utterance(unexpected=1)).encode(), "schema_error"),
    (json.dumps({"type": "mystery", "session_id": "s1"}).encode(), "schema_error"),
    (json.dumps({"type": "session_end", "session_id": "s1"}).encode(), "schema_error"),
    (json.dumps(utterance(text="x" * (LIMIT + 1))).encode(), "oversized_text"),
    (json.dumps(utterance(text="")).encode(), "schema_error"),
    (json.dumps(utterance(text="   \n\t")).encode(), "schema_error"),
])
def test_bad_records_are_dead_lettered_with_the_right_reason(raw, reason):
    assert dead(raw).reason == reason


def test_non_object_json_detail_names_the_type():
    assert "list" in dead(b"[]").detail


def test_missing_field_detail_names_the_field():
    raw = {k: v for k, v in utterance().items() if k != "speaker"}
    assert "speaker" in dead(json.dumps(raw)).detail


def test_empty_text_detail():
    assert dead(json.dumps(utterance(text=" "))).detail == "text: empty"


def test_dead_letter_keeps_raw_payload_sha256_and_provenance():
    raw = b'{"session_id": "s1", "seq": 0, "speaker": "narrator", "text": "hello"}'
    d = dead(raw, source_topic="utts", partition=3, offset=41, key="s1")
    assert d.payload == raw.decode()
    assert d.payload_sha256 == hashlib.sha256(raw).hexdigest()
    assert (d.source_topic, d.partition, d.offset, d.key, d.received_at) == ("utts", 3, 41, "s1", 123.0)


def test_malformed_payload_is_kept_verbatim():
    raw = "{oops this is " + SECRET
    d = dead(raw)
    assert d.payload == raw and d.payload_sha256 == hashlib.sha256(raw.encode()).hexdigest()


# ----------------------------------------------------------------------------------- PHI
@pytest.mark.parametrize("raw", [
    json.dumps(utterance(text=SECRET * 20)),                          # oversized
    json.dumps(utterance(text=SECRET, speaker="narrator")),           # unknown speaker
    json.dumps(utterance(text=SECRET, seq="not-a-number")),           # schema error elsewhere
    json.dumps(utterance(text=[SECRET])),                             # wrong type of the text itself
    json.dumps(utterance(text=SECRET, start_s=SECRET)),               # PHI in another field
    json.dumps({**utterance(text=SECRET), "type": SECRET}),           # PHI in the tag
    json.dumps(utterance(text=SECRET))[:-5],                          # truncated JSON
    json.dumps([SECRET]),                                             # not an object
])
def test_detail_never_contains_the_utterance_text(raw):
    d = dead(raw)
    assert "Zebra" not in d.detail and "Philippa" not in d.detail
    assert d.payload == raw  # ...but nothing is lost


@pytest.mark.parametrize("speaker", [["client"], {"name": "client"}])
def test_unhashable_speaker_is_dead_lettered_not_raised(speaker):
    d = dead(json.dumps(utterance(speaker=speaker)))
    assert d.reason in ("unknown_speaker", "schema_error")
