"""The store's sink against the real tansu broker and each real database: events, summaries, nudges and
session-opened produced to their topics end up in the store exactly as a direct write of the same messages
would leave it; malformed records become dead letters while the rest is stored; a sink killed with
SIGKILL mid-stream and restarted loses nothing and duplicates nothing (at-least-once + idempotent writes).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from kafka import KafkaProducer
from sqlalchemy import func, select

from homework_monitor.deploy.local_stack import Ports, start_broker, start_sink, wait_for_log
from homework_monitor.deploy.services import ServiceStack
from homework_monitor.store import ingest
from homework_monitor.store.db import Store
from homework_monitor.store.models import HomeworkEventRow, NudgeRow, SessionRow
from homework_monitor.stream.config import Settings

from ..postgres import PostgresServer, postgres_or_skip
from ..store import data
from ..store.snapshot import snapshot
from .conftest import consume

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'store.sqlite3'}"
        return
    server = PostgresServer(postgres_or_skip()).start()
    try:
        yield server.create_database()
    finally:
        server.stop()


def topic_of(settings: Settings, message) -> str:
    t = settings.topics
    return {"HomeworkEvent": t.homework_events, "SessionSummary": t.session_summaries, "Nudge": t.nudges,
            "SessionOpened": t.session_opened}[type(message).__name__]


def count(store: Store, column) -> int:
    with store.session() as db:
        return int(db.scalar(select(func.count(column))) or 0)


def test_sink_stores_everything_once_across_a_kill(tmp_path, store_url):
    ports = Ports.free()
    log_dir = tmp_path / "logs"
    settings = Settings(run_dir=tmp_path, app_id=f"hwm-store-it-{ports.kafka}", broker_session_timeout_s=6.0)
    # 10 + 60 sessions, 7 + 60 summaries, 8 + 180 events, 5 + 60 nudges: 384 messages
    good = data.messages() + data.load(60)
    first, second = good[: len(good) // 2], good[len(good) // 2:]
    t = settings.topics
    malformed = [(t.homework_events, b"a1", b"{not json"),
                 (t.session_summaries, b"a2", b'{"summary_id": "s", "session_id": "a2"}'),
                 (t.session_opened, b"l0001", b'{"session_id": "l0001", "started_at": "yesterday", "emitted_at": 1}')]
    sink_env = {"HWM_STORE_URL": store_url, "HWM_BROKER_SESSION_TIMEOUT_S": "6"}
    with ServiceStack() as stack:
        settings = start_broker(stack, settings, ports, log_dir)
        producer = KafkaProducer(acks="all", **settings.kafka_client_kwargs())

        def produce(messages, pause_s: float = 0.0) -> None:
            for m in messages:
                producer.send(topic_of(settings, m), key=m.session_id.encode(), value=m.model_dump_json().encode())
                if pause_s:
                    time.sleep(pause_s)
            producer.flush()

        produce(first[:40])
        for topic, key, value in malformed:
            producer.send(topic, key=key, value=value)
        produce(first[40:])

        start_sink(stack, settings, log_dir, extra_env=sink_env)
        store = Store.open(url=store_url, migrate=False)  # the sink migrated it
        # the rest arrives while the sink runs; the sink is killed (SIGKILL) in the middle of it
        feeder = threading.Thread(target=produce, args=(second, 0.01))
        feeder.start()
        deadline = time.monotonic() + 60
        while count(store, HomeworkEventRow.event_id) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        sink = stack["sink"]
        os.killpg(sink.pid, signal.SIGKILL)
        sink.stop()
        stored_at_kill = count(store, SessionRow.session_id)
        print(f"killed the sink with {stored_at_kill} of 70 sessions stored")
        feeder.join(60)
        sink.start()
        wait_for_log(sink.log_path, "partitions assigned", 60)

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (count(store, SessionRow.summary_id) < 67
                                               or count(store, HomeworkEventRow.event_id) < 188
                                               or count(store, NudgeRow.nudge_id) < 65):
            time.sleep(0.2)
        time.sleep(2)  # anything redelivered after the restart has been applied by now
        # dead letters: one per malformed record (a redelivery after the kill may repeat one)
        letters = consume(settings, [t.dead_letter], lambda r: len(r[t.dead_letter]) >= 3, 30)[t.dead_letter]
        log_text = sink.log_path.read_text() + sink.log_path.with_name("sink.log.1").read_text()
        sink.stop()

    assert stored_at_kill < 70, "the kill was meant to land mid-stream"
    reference = Store.open(url=f"sqlite:///{tmp_path / 'reference.sqlite3'}")
    with reference.session() as db:
        for m in good:
            ingest.apply(db, m)
    assert snapshot(store) == snapshot(reference)  # everything, once, exactly as written directly
    assert {(d["source_topic"], d["reason"]) for d in letters} == {
        (t.homework_events, "malformed_json"), (t.session_summaries, "schema_error"), (t.session_opened, "schema_error")}
    assert len({(d["source_topic"], d["partition"], d["offset"]) for d in letters}) == 3
    assert "refused" in log_text and "partitions assigned" in log_text
    for m in good:  # no quote or note in the sink's logs
        for text in (getattr(m, "quote", None), getattr(m, "note", None)):
            assert not text or text not in log_text
    store.close()
    reference.close()
