"""Real services for integration tests: tansu broker, tritonserver (python backend), Faust worker.

Everything binds free loopback ports and logs under the test's tmp dir, so runs never collide with a
demo on the default ports.
"""
from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from homework_monitor.deploy.local_stack import Ports, start_broker, start_triton, start_worker
from homework_monitor.deploy.services import ServiceStack
from homework_monitor.stream.config import Settings


@dataclass
class LiveStack:
    settings: Settings
    ports: Ports
    log_dir: Path
    services: ServiceStack
    worker_metrics_port: int


@pytest.fixture(scope="module")
def live_stack(tmp_path_factory, request) -> LiveStack:
    """A module's stack. A test module may set ``WORKER_SETTINGS`` (Settings fields with number or string
    values) for its worker."""
    run_dir = tmp_path_factory.mktemp("stack")
    log_dir = run_dir / "logs"
    ports = Ports.free()
    overrides = getattr(request.module, "WORKER_SETTINGS", {})
    settings = Settings(run_dir=run_dir, silence_flush_s=3.0, app_id=f"hwm-it-{ports.kafka}", **overrides)
    extra_env = {f"HWM_{k.upper()}": str(v) for k, v in overrides.items()}
    with ServiceStack() as stack:
        settings = start_broker(stack, settings, ports, log_dir)
        settings = start_triton(stack, settings, ports, log_dir)
        metrics_port = start_worker(stack, settings, log_dir, "worker-1", ports.worker_metrics, extra_env=extra_env)
        yield LiveStack(settings, ports, log_dir, stack, metrics_port)


def consume(settings: Settings, topics: list[str], until, timeout_s: float) -> dict[str, list[dict]]:
    """Read topics from the beginning (no consumer group) until ``until(records)`` or the timeout."""
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(consumer_timeout_ms=300, fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
                             **settings.kafka_client_kwargs())
    parts = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    records: dict[str, list[dict]] = {t: [] for t in topics}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until(records):
            for msg in consumer:
                records[msg.topic].append(json.loads(msg.value))
    finally:
        consumer.close()
    return records


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def metric_value(text: str, name: str, **labels: str) -> float:
    """Sum of samples of ``name`` whose labels include ``labels`` (Prometheus text format)."""
    from prometheus_client.parser import text_string_to_metric_families
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name in (name, name + "_total") and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total
