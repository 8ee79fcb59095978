"""Poison input on the real broker, tritonserver and worker: each trigger of issue 8 (defects 1 and 3)
is its own bounded dead letter, and the valid session sent around them comes out whole."""
from __future__ import annotations

import json

import pytest

from homework_monitor.producers.replay import demo_sessions_dir, read_sessions, schedule

from .conftest import consume, metric_value, scrape

pytestmark = pytest.mark.integration

VALID = {"type": "utterance", "session_id": "poison", "seq": 0, "speaker": "therapist", "text": "Write it down."}
TRIGGERS = {
    "nested_100k": (b"[" * 100_000 + b"]" * 100_000, "oversized_payload"),
    "nested_under_size_limit": (b"[" * 20_000 + b"]" * 20_000, "too_deep"),
    "lone_surrogate": (json.dumps({**VALID, "text": "Write \udc80 down."}).encode(), "invalid_encoding"),
    "therapist_id_1_2_mb": (json.dumps({**VALID, "therapist_id": "t" * 1_200_000}).encode(), "oversized_payload"),
    "seq_2_63": (json.dumps({**VALID, "seq": 2**63}).encode(), "schema_error"),
    "nan_start_s": (json.dumps({**VALID, "start_s": float("nan")}).encode(), "malformed_json"),
    "text_2_mb": (json.dumps({**VALID, "text": "write " * 350_000}).encode(), "oversized_payload"),
    "not_utf8": (b"\xff" + json.dumps(VALID).encode(), "invalid_encoding"),
}


def test_each_trigger_is_a_small_dead_letter_and_the_session_around_them_is_whole(live_stack):
    from kafka import KafkaProducer
    s = live_stack.settings
    t = s.topics
    session = read_sessions([demo_sessions_dir()])[0]
    msgs = schedule([session], speed=1e6, stagger_s=0.0)
    producer = KafkaProducer(acks="all", max_request_size=4 * 1024 * 1024, **s.kafka_client_kwargs())
    # The triggers share the valid session's key, so they land in its partition and its batches.
    key = session["session_id"].encode()
    half = len(msgs) // 2
    for m in msgs[:half]:
        producer.send(t.utterances, key=m.key.encode(), value=m.value)
    for value, _ in TRIGGERS.values():
        producer.send(t.utterances, key=key, value=value)
    for m in msgs[half:]:
        producer.send(t.utterances, key=m.key.encode(), value=m.value)
    producer.flush()
    producer.close()

    out = consume(s, [t.session_summaries, t.dead_letter],
                  until=lambda r: r[t.session_summaries] and len(r[t.dead_letter]) >= len(TRIGGERS), timeout_s=180)
    (summary,) = out[t.session_summaries]
    assert summary["session_id"] == session["session_id"]
    assert summary["n_utterances"] == len(session["utterances"]) and summary["missing_utterances"] == 0
    dead = out[t.dead_letter]
    assert sorted(d["reason"] for d in dead) == sorted(r for _, r in TRIGGERS.values())
    sizes = {d["reason"]: len(json.dumps(d).encode()) for d in dead}
    assert max(sizes.values()) < 8 * 1024, sizes
    assert sorted(d["payload_bytes"] for d in dead) == sorted(len(v) for v, _ in TRIGGERS.values())
    metrics = scrape(live_stack.worker_metrics_port)
    assert metric_value(metrics, "hwm_dead_letter", reason="oversized_payload") == 3
