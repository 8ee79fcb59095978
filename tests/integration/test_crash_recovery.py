"""kill -9 of the worker mid-replay, again and again: every utterance is applied exactly once.

Each round runs a fresh broker and a fresh consumer group against one tritonserver: worker-1 starts,
the demo sessions are replayed, worker-1 is killed at some point of the replay, and a replacement
starts at once (while the dead member still holds the group) or after a delay. Before the fix, the
replacement silently lost records fetched between faust resuming the partitions and seeking them,
and resumed from a committed offset ahead of the state it recovered (docs/RESTARTS.md).
"""
from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter

import pytest

from homework_monitor.deploy.local_stack import Ports, start_broker, start_triton, start_worker
from homework_monitor.deploy.services import ServiceStack
from homework_monitor.producers.replay import demo_sessions_dir, make_producer, read_sessions, replay, schedule
from homework_monitor.stream.config import Settings

from .accounting import offline_events, read_outputs, unaccounted

pytestmark = pytest.mark.integration

SPEED = 30.0  # the 10 demo sessions in about 13 s
# (where in the replay worker-1 dies, seconds before the replacement starts, replacement via `faust -A`,
#  commit the end offsets while no worker runs: a committed offset ahead of the state, as faust's
#  resume/seek race and tansu's short recovery used to leave it)
SESSION_TIMEOUT_S = 6.0  # the dead member's session expires sooner than with the default 10 s
ROUNDS = [(0.3, 0.0, False, False), (0.55, SESSION_TIMEOUT_S + 2, True, True), (0.85, 0.0, False, False)]
POSITION = re.compile(r"source utterances\[(\d+)\]: state at (\w+), committed (\w+): reading from (\w+)")


@pytest.fixture(scope="module")
def triton_settings(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("triton")
    # No silence flushes: a replacement's timer would otherwise flush turns whose reply is still in
    # the backlog it has not read yet, and the events would differ from the offline path's.
    settings = Settings(run_dir=run_dir, silence_flush_s=60.0, broker_session_timeout_s=SESSION_TIMEOUT_S)
    with ServiceStack() as stack:
        yield start_triton(stack, settings, Ports.free(), run_dir / "logs")


def commit_end_offsets(settings: Settings) -> dict[int, int]:
    """Join the worker group once its dead member has expired, and commit the end of every source
    partition, as if all of it had been processed."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from kafka.structs import OffsetAndMetadata
    tps = [TopicPartition(settings.topics.utterances, p) for p in range(settings.topic_partitions)]
    reader = KafkaConsumer(consumer_timeout_ms=500, fetch_max_wait_ms=20, **settings.kafka_client_kwargs())
    reader.assign(tps)
    reader.seek_to_beginning(*tps)
    end = {tp: 0 for tp in tps}  # read, not ListOffsets: tansu understates the end after a batch
    for msg in reader:
        end[TopicPartition(msg.topic, msg.partition)] = msg.offset + 1
    reader.close()
    # The dead worker is still listed with faust's assignor until the group rebalances: offer the same
    # protocol name, or the join is refused as inconsistent.
    faust_named = type("FaustNamedAssignor", (RoundRobinPartitionAssignor,), {"name": "faust"})
    member = KafkaConsumer(group_id=settings.app_id, enable_auto_commit=False, session_timeout_ms=6000,
                           heartbeat_interval_ms=2000, partition_assignment_strategy=[faust_named],
                           **settings.kafka_client_kwargs())
    member.subscribe([settings.topics.utterances])
    deadline = time.monotonic() + 60
    while len(member.assignment()) < len(tps) and time.monotonic() < deadline:
        member.poll(timeout_ms=200)
    member.commit({tp: OffsetAndMetadata(end[tp]) for tp in tps})
    member.close()
    return {tp.partition: end[tp] for tp in tps}


def run_round(base: Settings, run_dir, msgs, kill_at: float, delay_s: float, faust_cli: bool,
              commit_ahead: bool):
    ports = Ports.free()
    settings = base.model_copy(update={"run_dir": run_dir, "app_id": f"hwm-crash-{ports.kafka}"})
    log_dir = run_dir / "logs"
    with ServiceStack() as stack:
        settings = start_broker(stack, settings, ports, log_dir).model_copy(
            update={"triton_url": base.triton_url})
        start_worker(stack, settings, log_dir, "worker-1")
        sender = threading.Thread(target=replay, args=(msgs, make_producer(settings), settings.topics.utterances),
                                  kwargs={"progress": False})
        sender.start()
        time.sleep(msgs[-1].at * kill_at)
        os.killpg(stack["worker-1"].pid, signal.SIGKILL)
        time.sleep(delay_s)
        if commit_ahead:
            sender.join()  # everything is on the broker, and committed as if processed
            commit_end_offsets(settings)
        start_worker(stack, settings, log_dir, "worker-2", faust_cli=faust_cli)
        sender.join()
        out = read_outputs(settings, len({m.key for m in msgs}), timeout_s=90)
        replacement_log = (log_dir / "worker-2.log").read_text()
    return settings, out, replacement_log


def test_repeated_kill_9_with_immediate_and_delayed_restart_loses_nothing(triton_settings, tmp_path, monkeypatch):
    monkeypatch.setenv("HWM_BROKER_SESSION_TIMEOUT_S", str(SESSION_TIMEOUT_S))  # the workers' environment
    sessions = read_sessions([demo_sessions_dir()])
    msgs = schedule(sessions, speed=SPEED, stagger_s=0.3)
    sent = Counter(m.key for m in msgs if m.kind == "utterance")
    expected = offline_events(sessions, triton_settings)
    failures = {}
    for i, (kill_at, delay_s, faust_cli, commit_ahead) in enumerate(ROUNDS):
        settings, out, log = run_round(triton_settings, tmp_path / f"round-{i}", msgs, kill_at, delay_s, faust_cli,
                                       commit_ahead)
        t = settings.topics
        problems = unaccounted(sent, out[t.session_summaries], out[t.homework_events], expected)
        # The replacement positioned every partition from the recovered state, and never had to skip.
        positions = {int(p): (state, committed, start) for p, state, committed, start in POSITION.findall(log)}
        if len(positions) != settings.topic_partitions:
            problems["positioning"] = f"replacement positioned partitions {sorted(positions)}"
        if commit_ahead and not any(start == state != committed for state, committed, start in positions.values()):
            problems["commit ahead"] = f"no partition read from a state behind its committed offset: {positions}"
        if "never arrived" in log or "no longer on the broker" in log:
            problems["gaps"] = "replacement reported source gaps"
        if problems:
            failures[f"round {i}: kill at {kill_at:.0%}, restart after {delay_s:g} s"] = problems
    assert not failures, "\n".join(f"{r}: {p}" for r, p in failures.items())
