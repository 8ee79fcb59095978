"""Horizontal scale on the real broker and tritonserver: workers in one consumer group on 8 partitions.

Two and three workers (``HWM_LOCAL_WORKERS``, ``deploy.local_stack.start_workers``) split the 8
``utterances`` partitions and process the demo sessions x2 (28 sessions, follow-ups included, so the
client-history GlobalTable is shared by the workers): every session gets exactly one summary counting
every utterance sent, the events equal the offline path's, and each worker applied exactly the
utterances of the sessions on its partitions. Then one of three workers leaves mid-replay (SIGTERM,
and ``kill -9``): the other two take over its partitions and nothing is lost; redeliveries may repeat
a record, never with a new id (docs/RELIABILITY.md: per-session seq, deterministic ids).
Silence flushing is off, so the online windows are exactly the offline ones whatever the pauses.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter, defaultdict
from contextlib import contextmanager

import pytest

from homework_monitor.deploy.local_stack import (
    Ports,
    group_assignment,
    start_broker,
    start_triton,
    start_workers,
    wait_for_group,
    worker_ids,
)
from homework_monitor.deploy.services import ServiceStack
from homework_monitor.producers.replay import demo_sessions_dir, make_producer, read_sessions, replay, schedule
from homework_monitor.stream.config import Settings

from .accounting import offline_events, read_outputs, unaccounted
from .conftest import metric_value, scrape

pytestmark = pytest.mark.integration

PARTITIONS = 8
COPIES = 2  # the 14 demo sessions twice: 28 sessions on 8 partitions
BASE = read_sessions([demo_sessions_dir()])
MSGS = schedule(BASE, speed=100.0, stagger_s=0.1, copies=COPIES)
SENT = Counter(m.key for m in MSGS if m.kind == "utterance")
SESSION_TIMEOUT_S = 6.0  # a killed member leaves the group sooner than with the default 10 s
# The workers' environment (start_workers passes the partitions, URLs and ids itself).
WORKER_ENV = {"HWM_BROKER_SESSION_TIMEOUT_S": str(SESSION_TIMEOUT_S)}


@pytest.fixture(scope="module")
def triton_settings(tmp_path_factory):
    """One tritonserver for every group of this module (each group gets a fresh broker)."""
    run_dir = tmp_path_factory.mktemp("triton")
    settings = Settings(run_dir=run_dir, silence_flush_s=600.0, topic_partitions=PARTITIONS,
                        broker_session_timeout_s=SESSION_TIMEOUT_S)
    with ServiceStack() as stack:
        yield start_triton(stack, settings, Ports.free(), run_dir / "logs")


@pytest.fixture(scope="module")
def expected(triton_settings) -> set[tuple[str, int, str]]:
    """The offline path's events of the base sessions, under each copy's session id (events do not
    depend on other sessions)."""
    base = offline_events(BASE, triton_settings)
    return {(f"{sid}#{c}", turn, category) for c in range(COPIES) for sid, turn, category in base}


@contextmanager
def worker_group(base: Settings, run_dir, workers: int):
    """A fresh broker and ``workers`` workers in one group; yields (stack, settings, metrics ports)."""
    ports = Ports.free()
    settings = base.model_copy(update={"run_dir": run_dir, "app_id": f"hwm-horiz-{ports.kafka}",
                                       "local_workers": workers})
    with ServiceStack() as stack:
        settings = start_broker(stack, settings, ports, run_dir / "logs")
        metrics_ports = start_workers(stack, settings, run_dir / "logs", extra_env=WORKER_ENV)
        yield stack, settings, metrics_ports


def session_partitions(settings: Settings) -> dict[str, int]:
    """The partition each replayed session landed on, read back from the broker."""
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(consumer_timeout_ms=1000, fetch_max_wait_ms=20, **settings.kafka_client_kwargs())
    parts = [TopicPartition(settings.topics.utterances, p) for p in range(settings.topic_partitions)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    try:
        return {json.loads(m.value)["session_id"]: m.partition for m in consumer
                if json.loads(m.value).get("speaker") in ("therapist", "client")}
    finally:
        consumer.close()


def no_duplicates_past_ids(out: dict[str, list[dict]], settings: Settings) -> dict:
    """Problems with ids: one summary id per session, one event id per (session, turn, category).
    Records repeated with the same id (a redelivery) are what idempotence allows."""
    t = settings.topics
    problems = {}
    ids_by_event: dict[tuple, set[str]] = defaultdict(set)
    for e in out[t.homework_events]:
        ids_by_event[(e["session_id"], e["turn"], e["category"])].add(e["event_id"])
    if any(len(ids) != 1 for ids in ids_by_event.values()):
        problems["events with several ids"] = sorted(k for k, ids in ids_by_event.items() if len(ids) != 1)
    return problems


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_split_the_partitions_and_every_input_is_accounted_for(triton_settings, expected, tmp_path, workers):
    with worker_group(triton_settings, tmp_path, workers) as (stack, settings, metrics_ports):
        names = worker_ids(workers)
        before = wait_for_group(stack, names, PARTITIONS, 5)
        counts = replay(MSGS, make_producer(settings), settings.topics.utterances, progress=False)
        out = read_outputs(settings, len(SENT), timeout_s=150)
        pages = {n: scrape(port) for n, port in metrics_ports.items()}
        after = group_assignment(stack, names)
        partition_of = session_partitions(settings)
    t = settings.topics
    assert counts["utterance"] == sum(SENT.values())
    assert len(set(partition_of.values())) == PARTITIONS  # the sessions reach every partition
    # One rebalance at the start, none during the run; every worker got partitions.
    assert after == before and all(before.values()) and len(before) == workers
    assert not unaccounted(SENT, out[t.session_summaries], out[t.homework_events], expected)
    # No member left or joined: nothing was read twice.
    assert Counter(s["session_id"] for s in out[t.session_summaries]) == Counter(set(SENT))
    assert len({e["event_id"] for e in out[t.homework_events]}) == len(out[t.homework_events])
    # Each worker applied exactly the utterances of the sessions on its own partitions.
    applied = {n: metric_value(page, "hwm_utterances_total", result="ok") for n, page in pages.items()}
    owed = {n: sum(k for sid, k in SENT.items() if partition_of[sid] in before[n]) for n in names}
    assert applied == owed
    assert {n: metric_value(page, "hwm_session_summaries_total") for n, page in pages.items()} == \
        {n: sum(1 for sid in SENT if partition_of[sid] in before[n]) for n in names}


def _sigterm(stack: ServiceStack, name: str) -> None:
    assert stack[name].stop(timeout=60) == 0  # graceful: finishes its batch, commits, leaves the group


def _sigkill(stack: ServiceStack, name: str) -> None:
    os.killpg(stack[name].pid, signal.SIGKILL)  # no goodbye: the group notices after the session timeout


@pytest.mark.parametrize("leave", [_sigterm, _sigkill], ids=["sigterm", "kill_9"])
def test_a_worker_leaving_mid_replay_loses_nothing(triton_settings, expected, tmp_path, leave):
    with worker_group(triton_settings, tmp_path, 3) as (stack, settings, metrics_ports):
        names = worker_ids(3)
        before = wait_for_group(stack, names, PARTITIONS, 5)
        sender = threading.Thread(target=replay, args=(MSGS, make_producer(settings), settings.topics.utterances),
                                  kwargs={"progress": False})
        sender.start()
        time.sleep(MSGS[-1].at * 0.4)
        leaver = names[-1]
        page = scrape(metrics_ports[leaver])
        t_left = time.monotonic()
        leave(stack, leaver)
        after = wait_for_group(stack, names[:-1], PARTITIONS, 60)  # the survivors take its partitions
        rebalance_s = time.monotonic() - t_left
        sender.join()
        out = read_outputs(settings, len(SENT), timeout_s=150)
        final = group_assignment(stack, names)
        partition_of = session_partitions(settings)
    t = settings.topics
    assert before[leaver] and set(after) == set(names[:-1]) and final == after
    assert rebalance_s < SESSION_TIMEOUT_S * 4
    # It left mid-work: it had applied some of its sessions' utterances and summarised not all of them.
    its_sessions = [sid for sid in SENT if partition_of[sid] in before[leaver]]
    assert 0 < metric_value(page, "hwm_utterances_total", result="ok") < sum(SENT[sid] for sid in its_sessions)
    assert metric_value(page, "hwm_session_summaries_total") < len(its_sessions)
    problems = unaccounted(SENT, out[t.session_summaries], out[t.homework_events], expected)
    problems.update(no_duplicates_past_ids(out, settings))
    assert not problems
    # What a redelivery repeated (same ids): reported, allowed.
    repeated = {"summaries": len(out[t.session_summaries]) - len(SENT),
                "events": len(out[t.homework_events]) - len(expected)}
    print(f"{leave.__name__}: partitions {before} -> {after} in {rebalance_s:.1f} s; records repeated {repeated}")
