"""Fault suite, fuzz part: 10,000 fuzzed messages interleaved with valid sessions on the real broker,
tritonserver and worker. Every input is accounted for (applied, duplicate, dead-lettered; lost = 0),
the valid sessions come out exactly as the offline path says, and planted PHI markers appear in no log
and no metric."""
from __future__ import annotations

import json
import random
import time

import pytest

from homework_monitor.cli import summarize_corpus_sessions
from homework_monitor.producers.replay import demo_sessions_dir, read_sessions, schedule
from homework_monitor.stream.classifiers import InProcessClassifier
from homework_monitor.stream.validation import Err, parse_inbound

from .conftest import consume, metric_value, scrape

pytestmark = pytest.mark.integration

N_FUZZ = 10_000
MARKER = "PHI-MARKER-7f3a"  # planted in every text, valid or not; must never reach a log or a metric


def _valid_utterance(rng: random.Random, sid: str) -> dict:
    return {"type": "utterance", "session_id": sid, "seq": rng.randrange(0, 50),
            "speaker": rng.choice(["therapist", "client"]),
            "text": f"{MARKER} please write down what you notice {rng.random():.3f}"}


def _mutate(rng: random.Random, msg: dict) -> dict | list | str | int | None:
    """One random defect, the kinds an operator or attacker sends (issue 8, defects 1 and 3)."""
    msg = dict(msg)
    field = rng.choice(list(msg))
    weird = [None, True, 3.5, -1, 2**63, 10**400 // 10**390, "", " ", [], {}, [MARKER], {"a": MARKER},
             "x" * 300, "\udc80" + MARKER, MARKER + "\x00\x07", "9" * 40, float("inf")]
    kind = rng.randrange(9)
    if kind == 0:
        msg.pop(field)
    elif kind == 1:
        msg[field] = rng.choice(weird)
    elif kind == 2:
        msg["speaker"] = rng.choice(["narrator", "THERAPIST", "", MARKER + " "])
    elif kind == 3:
        msg["text"] = MARKER + " " + "word " * rng.randrange(900, 3000)  # over 4,000 characters
    elif kind == 4:
        msg["type"] = rng.choice(["session_end", "silence_check", "session_start", "nope", 7])
    elif kind == 5:
        msg[rng.choice(["therapist_id", "client_id", "program_id"])] = rng.choice(
            ["t" * rng.randrange(129, 5000), "has space " + MARKER, "t-ok/../x", "ok-id"])
    elif kind == 6:
        msg["extra"] = MARKER
    elif kind == 7:
        return rng.choice([[msg], MARKER, 42, None])
    else:
        msg["start_s"] = rng.choice([float("nan"), -5.0, 1e12, "soon"])
    return msg


def fuzz_payloads(rng: random.Random, n: int, n_big: int = 4) -> list[bytes]:
    out: list[bytes] = []
    while len(out) < n - n_big:
        sid = f"fuzz-{rng.randrange(400)}"
        r = rng.random()
        if r < 0.55:
            obj = _mutate(rng, _valid_utterance(rng, sid))
            text = json.dumps(obj, allow_nan=True)
            out.append(text.encode("utf-8", "surrogatepass"))
        elif r < 0.65:
            raw = json.dumps(_valid_utterance(rng, sid)).encode()
            out.append(raw[: rng.randrange(1, len(raw))])  # truncated JSON
        elif r < 0.72:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(0, 300))))  # garbage
        elif r < 0.78:
            depth = rng.choice([40, 200, 5_000, 30_000])
            out.append(b"[" * depth + json.dumps(MARKER).encode() + b"]" * depth)
        elif r < 0.84:
            out.append(b"\xff\xfe" + json.dumps(_valid_utterance(rng, sid)).encode())  # not UTF-8
        elif r < 0.90:
            out.append(json.dumps(_valid_utterance(rng, sid)).encode())  # valid, for a fuzz session
        else:
            out.append(json.dumps({"type": "session_end", "session_id": sid,
                                   "n_utterances": rng.choice([0, 3, -1, 2**40, "x"])}).encode())
    big = {"type": "utterance", "session_id": "fuzz-big", "seq": 0, "speaker": "client", "text": MARKER}
    out += [json.dumps({**big, "therapist_id": "t" * 1_200_000}).encode(),
            json.dumps({**big, "text": MARKER + " x" * 1_000_000}).encode(),
            b"[" * 600_000 + b"]" * 600_000,
            json.dumps({**big, "seq": 2**63}).encode()][:n_big]
    rng.shuffle(out)
    return out


def topic_size(settings, topic: str) -> int:
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(**settings.kafka_client_kwargs())
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return sum(consumer.end_offsets(parts).values())
    finally:
        consumer.close()


def test_ten_thousand_fuzzed_messages_lose_nothing_and_leak_nothing(live_stack):
    from kafka import KafkaProducer
    s = live_stack.settings
    t = s.topics
    rng = random.Random(20261206)
    sessions = read_sessions([demo_sessions_dir()])
    for sess in sessions:  # plant the marker in every valid text too
        for u in sess["utterances"]:
            u["text"] = f"{u['text']} ({MARKER})"
    valid = schedule(sessions, speed=1e6, stagger_s=0.0)
    fuzz = fuzz_payloads(rng, N_FUZZ)
    expected_dead = sum(isinstance(parse_inbound(p, max_text_chars=s.max_text_chars, received_at=0.0), Err)
                        for p in fuzz)

    producer = KafkaProducer(acks="all", max_request_size=4 * 1024 * 1024, linger_ms=5,
                             **s.kafka_client_kwargs())
    keys = [m.key for m in valid]
    queue = [(m.key.encode(), m.value) for m in valid]
    # Interleave: fuzz messages are keyed like the valid sessions, so they share their partitions and batches.
    for p in fuzz:
        queue.insert(rng.randrange(len(queue) + 1), (rng.choice(keys).encode(), p))
    # Keep each valid session's own order (insertions never reorder the valid messages).
    for key, value in queue:
        producer.send(t.utterances, key=key, value=value)
    producer.flush()
    producer.close()
    sent = len(queue)

    out = consume(s, [t.session_summaries, t.homework_events, t.dead_letter],
                  until=lambda r: len(r[t.dead_letter]) >= expected_dead
                  and len({x["session_id"] for x in r[t.session_summaries]} & {x["session_id"] for x in sessions})
                  == len(sessions), timeout_s=300)
    deadline = time.monotonic() + 90
    while True:  # every input counted by outcome; nothing unaccounted for
        # The input topic also carries the worker's own silence checks, still arriving for the fuzz
        # sessions left waiting: count what is on it, and accept only a reading that held still.
        before = topic_size(s, t.utterances)
        text = scrape(live_stack.worker_metrics_port)
        counted = sum(metric_value(text, "hwm_utterances", result=r)
                      for r in ("ok", "duplicate", "late", "control", "dead_letter"))
        inputs = topic_size(s, t.utterances)
        if (counted >= inputs == before) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert inputs >= sent
    # Lost = 0: every input has an outcome. At-least-once may process a record twice (a redelivered
    # record counts again, as a duplicate or the same dead letter), never zero times.
    assert counted >= inputs, f"{inputs - counted} of {inputs} inputs unaccounted for"
    assert counted - inputs <= inputs // 100, f"{counted - inputs} redeliveries without any fault"
    # Each refused input has exactly one dead letter, found by its pointer (partition, offset).
    pointers = {(d["partition"], d["offset"]) for d in out[t.dead_letter]}
    assert len(pointers) == expected_dead
    assert max(len(json.dumps(d)) for d in out[t.dead_letter]) < 8 * 1024

    # The valid sessions are exactly what the offline path makes of them.
    valid_ids = {x["session_id"] for x in sessions}
    online = {x["session_id"]: x for x in out[t.session_summaries] if x["session_id"] in valid_ids}
    offline = summarize_corpus_sessions(sessions, InProcessClassifier(s.artifact_dir), s.event_threshold)
    for want in offline:
        got = online[want.session_id]
        assert got["n_utterances"] == want.n_utterances and got["missing_utterances"] == 0
        assert sorted((a["turn"], a["category"]) for a in got["assignments"]) == \
            sorted((a.turn, a.category) for a in want.assignments)

    # PHI: the marker is in none of the services' logs, nor in worker or Triton metrics.
    leaks = [p.name for p in live_stack.log_dir.glob("*.log") if MARKER in p.read_text(errors="replace")]
    assert leaks == [], f"transcript marker in logs: {leaks}"
    assert MARKER not in text
    triton_metrics = scrape(live_stack.ports.triton_metrics)
    assert MARKER not in triton_metrics
