"""The sink's batch step on a real database: good records stored, bad ones dead-lettered with a reason
(never a crash, never a silent drop), the database's refusals isolated to their record, an outage waited
out without committing. The Kafka side is covered by tests/integration/test_store_sink.py."""
from __future__ import annotations

import json
import threading
import time

import pytest
from kafka.consumer.fetcher import ConsumerRecord
from sqlalchemy.exc import DataError, IntegrityError, OperationalError

from homework_monitor.deploy.services import free_port
from homework_monitor.store.db import Store
from homework_monitor.store.models import HomeworkEventRow
from homework_monitor.store.sink import Stopped, StoreSink, decode, is_transient
from homework_monitor.stream.config import Settings
from homework_monitor.stream.schemas import DeadLetter, HomeworkEvent, SessionSummary

from ..postgres import PostgresServer, postgres_or_skip
from . import data
from .snapshot import snapshot

SETTINGS = Settings()
TOPICS = SETTINGS.topics


class RecordingProducer:
    """Collects what the sink sends (the dead letters); flush() counts acknowledgements asked for."""

    def __init__(self):
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.flushes = 0

    def send(self, topic, key=None, value=None):
        self.sent.append((topic, key, value))

    def flush(self, timeout=None):
        self.flushes += 1


def topic_of(message) -> str:
    return {"HomeworkEvent": TOPICS.homework_events, "SessionSummary": TOPICS.session_summaries,
            "Nudge": TOPICS.nudges, "SessionOpened": TOPICS.session_opened}[type(message).__name__]


def record(topic: str, value, offset: int, partition: int = 0, key: bytes | None = b"k") -> ConsumerRecord:
    raw = value.model_dump_json().encode() if hasattr(value, "model_dump_json") else value
    return ConsumerRecord(topic, partition, -1, offset, 0, 0, key, raw, [], None, 1, len(raw or b""), 0)


def records_of(messages) -> list[ConsumerRecord]:
    return [record(topic_of(m), m, i) for i, m in enumerate(messages)]


def sink(store: Store, producer=None, stop=None) -> StoreSink:
    return StoreSink(SETTINGS, store, consumer=None, producer=producer or RecordingProducer(), stop=stop)


EVENT = data.event("a1", 5, "journal", data.ts(2, 10))


@pytest.mark.parametrize("raw, reason, detail_part", [
    (b"not json", "malformed_json", "not JSON"),
    (None, "malformed_json", ""),  # a tombstone
    (b"[1, 2]", "malformed_json", "expected a JSON object"),
    (b"\xff\xfe", "invalid_encoding", "not UTF-8"),
    (b'{"event_id": NaN}', "malformed_json", "NaN is not JSON"),
    (json.dumps({**EVENT.model_dump(), "confidence": "high"}).encode(), "schema_error", "confidence: float_parsing"),
    (json.dumps({**EVENT.model_dump(), "secret text field": 1}).encode(), "schema_error", "<other field>: extra_forbidden"),
    (json.dumps({k: v for k, v in EVENT.model_dump().items() if k != "quote"}).encode(), "schema_error", "quote: missing"),
    (json.dumps({**EVENT.model_dump(), "session_id": "x" * 129}).encode(), "schema_error", "session_id: string_too_long"),
    (json.dumps({**EVENT.model_dump(), "session_id": "has space"}).encode(), "schema_error", "session_id: string_pattern_mismatch"),
    (json.dumps({**EVENT.model_dump(), "event_id": "e" * 65}).encode(), "schema_error", "event_id: length"),
    (b"[" * 100, "too_deep", "nested deeper"),
])
def test_decode_refuses_with_a_reason_and_no_text(raw, reason, detail_part):
    got = decode(HomeworkEvent, raw)
    assert not isinstance(got, HomeworkEvent)
    assert got.reason == reason and detail_part in got.detail
    assert "journal task" not in got.detail and "secret" not in got.detail  # names and types, never values


def test_decode_accepts_what_the_worker_sends():
    assert decode(HomeworkEvent, EVENT.model_dump_json().encode()) == EVENT
    s = data.summary("a1", 0.0, 10.0, [data.assignment(1, "learn")])
    assert decode(SessionSummary, s.model_dump_json()) == s


def test_a_batch_with_bad_records_stores_the_rest_and_dead_letters_the_bad(store):
    msgs = data.messages()
    recs = records_of(msgs)
    recs.insert(3, record(TOPICS.homework_events, b"{broken", 100, partition=2, key=b"a1"))
    recs.insert(7, record(TOPICS.session_summaries, b'{"summary_id": "x"}', 101, partition=1))
    recs.insert(9, record(TOPICS.nudges, json.dumps({"rule": "some_rule"}).encode(), 102, partition=3))
    producer = RecordingProducer()
    result = sink(store, producer).handle(recs)
    assert sum(result.stored.values()) == len(msgs)
    assert dict(result.dead) == {"malformed_json": 1, "schema_error": 2}
    assert producer.flushes == 1  # acknowledged before the caller commits
    letters = [DeadLetter.model_validate_json(v) for _, _, v in producer.sent]
    assert {t for t, _, _ in producer.sent} == {TOPICS.dead_letter}
    assert [(d.source_topic, d.partition, d.offset, d.reason) for d in letters] == [
        (TOPICS.homework_events, 2, 100, "malformed_json"), (TOPICS.session_summaries, 1, 101, "schema_error"),
        (TOPICS.nudges, 3, 102, "schema_error")]
    assert letters[0].key == "a1" and letters[0].payload == "{broken"
    # offsets to commit cover every record, stored or dead-lettered
    assert result.offsets[(TOPICS.homework_events, 2)] == 101
    assert result.offsets[(TOPICS.homework_events, 0)] == max(r.offset for r in recs
                                                               if r.topic == TOPICS.homework_events and r.partition == 0) + 1
    # the stored rows are exactly those of the good messages, and a redelivered batch changes nothing
    first = snapshot(store)
    assert len(first["sessions"]) == 10 and len(first["homework_events"]) == 8
    sink(store).handle(recs)
    assert snapshot(store) == first


def test_a_record_the_database_refuses_is_dead_lettered_alone(store):
    """PostgreSQL refuses NUL characters in text (valid JSON: \\u0000); SQLite stores them. Either way the
    batch's other records are stored and nothing is lost silently."""
    bad = data.event("a1", 9, "practice", data.ts(2, 10, 15), quote="before\x00after")
    msgs = [data.opened("a1", data.ts(2, 10)), data.event("a1", 5, "journal", data.ts(2, 10, 10)), bad]
    producer = RecordingProducer()
    result = sink(store, producer).handle(records_of(msgs))
    with store.session() as db:
        stored = sorted(db.scalars(HomeworkEventRow.__table__.select().with_only_columns(HomeworkEventRow.turn)))
    if store.engine.dialect.name == "postgresql":
        assert dict(result.dead) == {"processing_error": 1} and stored == [5]
        letter = DeadLetter.model_validate_json(producer.sent[0][2])
        assert letter.offset == 2 and letter.detail.startswith("store write failed: ")
        assert "before" not in letter.detail
    else:
        assert not result.dead and stored == [5, 9]
    assert result.offsets == {(TOPICS.session_opened, 0): 1, (TOPICS.homework_events, 0): 3}


def test_database_outage_is_waited_out_and_nothing_is_lost():
    """A real PostgreSQL stopped under the sink: the batch waits (commits nothing), then completes once the
    database is back."""
    server = PostgresServer(postgres_or_skip()).start()
    try:
        store = Store.open(url=server.create_database())
        server.pause()
        msgs = data.messages()
        done = threading.Event()
        results = []

        def run():
            results.append(sink(store).handle(records_of(msgs)))
            done.set()
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        assert not done.wait(3.0)  # still waiting for the database, nothing acknowledged
        server.resume()
        assert done.wait(60), "the sink did not resume after the database came back"
        assert sum(results[0].stored.values()) == len(msgs) and not results[0].dead
        snap = snapshot(store)
        assert len(snap["sessions"]) == 10 and len(snap["homework_events"]) == 8
        store.close()
    finally:
        server.stop()


def test_a_stop_during_an_outage_ends_the_wait_without_committing():
    # a database that cannot be reached at all: a closed loopback port
    dead = Store.open(url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x", migrate=False)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()
    t0 = time.monotonic()
    with pytest.raises(Stopped):
        sink(dead, stop=stop).handle(records_of(data.messages()[:3]))
    assert 0.9 < time.monotonic() - t0 < 10


def test_transient_errors_are_told_apart_from_refusals():
    assert is_transient(OperationalError("s", {}, Exception("connection refused")))
    assert not is_transient(IntegrityError("s", {}, Exception("duplicate")))
    assert not is_transient(DataError("s", {}, Exception("nul")))
