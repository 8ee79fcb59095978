"""The RocksDB table store: a restarted worker recovers its sessions from local disk, and from the
changelog when the disk is empty; the stored position carries over either way."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import time
from collections import Counter

import pytest
from rocksdict import AccessType, Options, Rdict

from homework_monitor.deploy.local_stack import (
    Ports,
    changelog_topic,
    start_broker,
    start_triton,
    start_worker,
    wait_for_log,
)
from homework_monitor.deploy.services import ServiceStack
from homework_monitor.producers.replay import demo_sessions_dir, make_producer, read_sessions, replay, schedule
from homework_monitor.stream.config import Settings
from homework_monitor.stream.progress import MARKER_KIND

from .accounting import offline_events, read_outputs, unaccounted

pytestmark = pytest.mark.integration

WORKER = "worker-disk"


def end_offsets(settings: Settings) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(**settings.kafka_client_kwargs())
    try:
        tps = [TopicPartition(settings.topics.utterances, p) for p in range(settings.topic_partitions)]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def changelog_markers(settings: Settings) -> dict[int, int]:
    """The latest position marker of each source partition in the table's changelog."""
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(consumer_timeout_ms=300, fetch_max_wait_ms=20, **settings.kafka_client_kwargs())
    topic = changelog_topic(settings)
    tps = [TopicPartition(topic, p) for p in range(settings.topic_partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    markers = {}
    try:
        for msg in consumer:
            key = json.loads(msg.key)
            if isinstance(key, list) and key[0] == MARKER_KIND and msg.value:
                markers[key[2]] = json.loads(msg.value)["next_offset"]
    finally:
        consumer.close()
    return markers


class AckedProducer:
    """The replay's producer, remembering the offset each record got. tansu answers ListOffsets with the
    base offset of a partition's last batch + 1 when that batch holds several records (docs/RESTARTS.md),
    so the ends are taken from the acknowledgements too (a replay part can end on such a batch)."""

    def __init__(self, producer):
        self.producer, self.ends = producer, {}

    def send(self, *args, **kwargs):
        fut = self.producer.send(*args, **kwargs)
        fut.add_callback(self._acked)
        return fut

    def _acked(self, metadata) -> None:
        self.ends[metadata.partition] = max(self.ends.get(metadata.partition, 0), metadata.offset + 1)

    def flush(self) -> None:
        self.producer.flush()


def wait_until_applied(settings: Settings, acked: dict[int, int], timeout_s: float = 60) -> dict[int, int]:
    """Until the worker's stored position reaches the end of every non-empty source partition."""
    deadline = time.monotonic() + timeout_s
    while True:
        listed = end_offsets(settings)
        end = {p: max(e, acked.get(p, 0)) for p, e in listed.items() if max(e, acked.get(p, 0))}
        markers = changelog_markers(settings)
        if all(markers.get(p) == e for p, e in end.items()):
            return end
        if time.monotonic() > deadline:
            raise AssertionError(f"positions {markers} never reached the ends {end}")
        time.sleep(0.5)


def disk_markers(datadir) -> dict[int, int]:
    """Position markers read straight from the dead worker's RocksDB partition files."""
    found = {}
    for path in datadir.rglob("sessions-*.db"):
        db = Rdict(str(path), options=Options(raw_mode=True), access_type=AccessType.read_only())
        try:
            for key, value in db.items():
                key = json.loads(key) if key.startswith(b"[") else None
                if key and key[0] == MARKER_KIND:
                    found[key[2]] = json.loads(value)["next_offset"]
        finally:
            db.close()
    return found


def recovery_start_offsets(log_text: str) -> dict[int, int]:
    """Sessions-changelog offset each active partition's recovery started from (-1: from the beginning),
    from the log's last "Reading Starts At - Active" table; rows of other tables' changelogs (the client
    history's) and the tables printed after it are not read."""
    lines = log_text.rsplit("Reading Starts At - Active", 1)[1].split("\n")[1:]
    out: dict[int, int] = {}
    topic = ""
    for line in lines:
        if not line.startswith(("|", "+")):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[1].isdigit():
            continue
        topic = topic if cells[0] == "〃" else cells[0]
        if topic.endswith("-sessions-changelog"):
            out[int(cells[1])] = int(cells[2])
    return out


def restart(stack: ServiceStack, log_path) -> dict[int, int]:
    """Start the same worker again (same id, same data dir); its recovery's start offsets."""
    stack[WORKER].start()
    wait_for_log(log_path, "source utterances[", 90)  # positioned after the table recovery
    return recovery_start_offsets(log_path.read_text())


def shifted(msgs, start: float, stop: float):
    return [dataclasses.replace(m, at=m.at - start) for m in msgs if start <= m.at < stop]


def test_rocksdb_restart_recovers_from_disk_then_from_the_changelog(tmp_path):
    ports = Ports.free()
    settings = Settings(run_dir=tmp_path, silence_flush_s=60.0, app_id=f"hwm-disk-{ports.kafka}",
                        table_store="rocksdb")
    log_dir = tmp_path / "logs"
    datadir = tmp_path / f"faust-{WORKER}"
    sessions = read_sessions([demo_sessions_dir()])
    msgs = schedule(sessions, speed=40.0, stagger_s=0.3)
    third = msgs[-1].at / 3
    parts = [shifted(msgs, 0, third), shifted(msgs, third, 2 * third), shifted(msgs, 2 * third, float("inf"))]
    with ServiceStack() as stack:
        settings = start_broker(stack, settings, ports, log_dir)
        settings = start_triton(stack, settings, ports, log_dir)
        producer = AckedProducer(make_producer(settings))

        start_worker(stack, settings, log_dir, WORKER)
        replay(parts[0], producer, settings.topics.utterances, progress=False)
        applied = wait_until_applied(settings, producer.ends)
        os.killpg(stack[WORKER].pid, signal.SIGKILL)
        stack[WORKER].stop()
        assert disk_markers(datadir) == applied  # the state is on local disk, position included

        # Restart on the same disk: recovery reads only the changelog written after what is on disk.
        from_disk = restart(stack, log_dir / f"{WORKER}.log")
        assert all(from_disk[p] >= 0 for p in applied), from_disk
        replay(parts[1], producer, settings.topics.utterances, progress=False)
        applied = wait_until_applied(settings, producer.ends)
        os.killpg(stack[WORKER].pid, signal.SIGKILL)
        stack[WORKER].stop()

        # An empty disk (a new volume): everything comes back from the changelog.
        shutil.rmtree(datadir)
        from_changelog = restart(stack, log_dir / f"{WORKER}.log")
        assert all(from_changelog[p] == -1 for p in applied), from_changelog
        replay(parts[2], producer, settings.topics.utterances, progress=False)
        sent = Counter(m.key for m in msgs if m.kind == "utterance")
        out = read_outputs(settings, len(sent), timeout_s=90)
    t = settings.topics
    problems = unaccounted(sent, out[t.session_summaries], out[t.homework_events], offline_events(sessions, settings))
    assert not problems, problems
