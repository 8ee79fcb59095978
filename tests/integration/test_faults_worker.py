"""Faults around the worker, on the real broker and tritonserver: Triton stopped (SIGTERM, rolling
restart) and killed (-9) mid-replay, a Triton that rejects every request, a Triton that hangs, a
worker stopped with SIGTERM mid-replay, and a broker restart that wipes everything.

Nothing may be lost: every session gets exactly one summary counting every utterance sent, and the
events equal the offline path's. A worker that cannot go on fails /healthz and exits non-zero; the
restarted worker reads the batch again. Silence flushing is off (HWM_SILENCE_FLUSH_S far above any
outage), so the online windows are exactly the offline ones whatever the pauses.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import pytest

from homework_monitor.cli import summarize_corpus_sessions
from homework_monitor.deploy.local_stack import (
    Ports,
    restart_broker,
    restart_triton,
    restart_worker,
    start_broker,
    start_triton,
    start_worker,
)
from homework_monitor.deploy.services import ServiceStack
from homework_monitor.producers.replay import demo_sessions_dir, make_producer, read_sessions, replay, schedule
from homework_monitor.stream.classifiers import InProcessClassifier
from homework_monitor.stream.config import Settings

from .conftest import consume, metric_value

pytestmark = pytest.mark.integration

SESSIONS = read_sessions([demo_sessions_dir()])
FAST_HEALTH = {"HWM_HEALTH_CHECK_INTERVAL_S": "1", "HWM_FATAL_EXIT_DELAY_S": "3"}
# For tests that restart the worker: a replacement can come up assigned but idle on tansu (the known
# fast-restart stall, defect 4); it then exits within ~25 s and the orchestrator starts it again.
QUICK_STALL_EXIT = {"HWM_STALL_TIMEOUT_S": "10", "HWM_STALL_EXIT_S": "20"}


@pytest.fixture(scope="module")
def offline_events() -> set[tuple[str, int, str]]:
    settings = Settings()
    offline = summarize_corpus_sessions(SESSIONS, InProcessClassifier(settings.artifact_dir),
                                        settings.event_threshold)
    return {(s.session_id, a.turn, a.category) for s in offline for a in s.assignments}


@contextmanager
def stack_with_worker(tmp_path: Path, worker_env: dict[str, str] | None = None,
                      model_repository: Path | None = None):
    """tansu + tritonserver + one worker on free loopback ports; yields (stack, settings, ports)."""
    ports = Ports.free()
    settings = Settings(run_dir=tmp_path, silence_flush_s=600.0, app_id=f"hwm-faults-{ports.kafka}")
    if model_repository is not None:
        settings = settings.model_copy(update={"model_repository": model_repository})
    log_dir = tmp_path / "logs"
    with ServiceStack() as stack:
        settings = start_broker(stack, settings, ports, log_dir)
        settings = start_triton(stack, settings, ports, log_dir)
        start_worker(stack, settings, log_dir, "worker-1", ports.worker_metrics,
                     extra_env={**FAST_HEALTH, **(worker_env or {})})
        assert wait_until(lambda: readiness(ports.worker_metrics) == (200, []), 15)
        yield stack, settings, ports


class RestartOnExit:
    """What an orchestrator does (restartPolicy: Always): a worker that exits is started again."""

    def __init__(self, stack: ServiceStack, name: str):
        self.stack, self.name, self.restarts = stack, name, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.stack[self.name].is_running:
                self.restarts += 1
                try:
                    restart_worker(self.stack, self.name)
                except TimeoutError:
                    pass  # exited again before it owned partitions: the next round restarts it
            self._stop.wait(0.5)

    def __enter__(self) -> RestartOnExit:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def replay_in_background(settings: Settings, speed: float) -> tuple[threading.Thread, float]:
    """Replay the demo sessions from a thread; returns it and the replay's length in seconds."""
    msgs = schedule(SESSIONS, speed=speed, stagger_s=0.5)
    sender = threading.Thread(target=replay, args=(msgs, make_producer(settings), settings.topics.utterances),
                              kwargs={"progress": False})
    sender.start()
    return sender, msgs[-1].at


def probe(port: int, path: str) -> tuple[int | None, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, type(e).__name__


def wait_until(condition: Callable[[], bool], timeout_s: float, every_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every_s)
    return condition()


def readiness(port: int) -> tuple[int | None, list[str]]:
    status, body = probe(port, "/readyz")
    try:
        return status, json.loads(body)["reasons"]
    except (ValueError, KeyError):
        return status, []


def collect(settings: Settings, timeout_s: float = 150) -> dict[str, list[dict]]:
    """Every event and summary, once each session has a summary (late redeliveries included)."""
    t = settings.topics
    want = {s["session_id"] for s in SESSIONS}
    first = consume(settings, [t.homework_events, t.session_summaries],
                    until=lambda r: {s["session_id"] for s in r[t.session_summaries]} >= want, timeout_s=timeout_s)
    time.sleep(3)
    return consume(settings, [t.homework_events, t.session_summaries],
                   until=lambda r: all(len(r[k]) >= len(first[k]) for k in first), timeout_s=60)


def assert_nothing_lost(settings: Settings, out: dict[str, list[dict]], offline_events, exactly_once: bool):
    t = settings.topics
    summaries = out[t.session_summaries]
    sent = {s["session_id"]: len(s["utterances"]) for s in SESSIONS}
    # One summary per session (a redelivery may re-send one, with the same id and content).
    assert {s["session_id"] for s in summaries} == set(sent)
    assert len({s["summary_id"] for s in summaries}) == len(sent)
    if exactly_once:
        assert Counter(s["session_id"] for s in summaries) == Counter(set(sent))
    assert {s["session_id"]: s["n_utterances"] for s in summaries} == sent
    assert all(s["missing_utterances"] == 0 for s in summaries)
    events = out[t.homework_events]
    assert {(e["session_id"], e["turn"], e["category"]) for e in events} == offline_events
    if exactly_once:
        assert len({e["event_id"] for e in events}) == len(events)


def committed_but_not_applied(settings: Settings) -> list[tuple[int, int]]:
    """(partition, offset) of utterances below the group's committed offset that the sessions table
    (its changelog) does not cover: a commit past records that were never applied."""
    from kafka import KafkaConsumer, TopicPartition
    group = KafkaConsumer(group_id=settings.app_id, enable_auto_commit=False, **settings.kafka_client_kwargs())
    committed = {p: group.committed(TopicPartition(settings.topics.utterances, p)) or 0
                 for p in range(settings.topic_partitions)}
    group.close(autocommit=False)
    changelog = f"{settings.app_id}-sessions-changelog"
    records = consume_raw(settings, [settings.topics.utterances, changelog])
    last_seq = {}
    for _, _, key, value in records[changelog]:
        state = json.loads(value) if value else None
        if isinstance(state, dict) and "last_seq" in state:
            last_seq[json.loads(key)] = state["last_seq"]
    return [(p, o) for p, o, _, value in records[settings.topics.utterances] if o < committed[p]
            for m in [json.loads(value)] if m.get("speaker") in ("therapist", "client")
            and last_seq.get(m["session_id"], -1) < m["seq"]]


def consume_raw(settings: Settings, topics: list[str]) -> dict[str, list[tuple]]:
    """Every record of ``topics`` as (partition, offset, key, value), read from the beginning."""
    from kafka import KafkaConsumer, TopicPartition
    consumer = KafkaConsumer(consumer_timeout_ms=2000, **settings.kafka_client_kwargs())
    parts = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    out: dict[str, list[tuple]] = {t: [] for t in topics}
    try:
        for m in consumer:
            out[m.topic].append((m.partition, m.offset, m.key, m.value))
    finally:
        consumer.close()
    return out


def assert_no_transcript_text(log_path: Path) -> None:
    log = log_path.read_text(errors="replace")
    texts = [u["text"] for s in SESSIONS for u in s["utterances"] if len(u["text"]) > 40][::25]
    assert texts and not [x for x in texts if x in log]


def scrape(port: int) -> str:
    return probe(port, "/metrics")[1]


def _sigterm(stack):
    stack["tritonserver"].stop()  # SIGTERM; in-flight requests end in errors while it shuts down


def _sigkill(stack):
    os.killpg(stack["tritonserver"].pid, signal.SIGKILL)


# A SIGTERM'd server answers "shutting down" before it goes (any transient kind); a killed one is unavailable.
@pytest.mark.parametrize(("stop", "down_s", "error_kind"), [(_sigterm, 10, None), (_sigkill, 30, "unavailable")],
                         ids=["rolling_restart", "killed_30s"])
def test_triton_down_mid_replay_loses_nothing(tmp_path, offline_events, stop, down_s, error_kind):
    """Triton stopped with SIGTERM (as a rolling update does) or killed, back later: the worker waits."""
    with stack_with_worker(tmp_path) as (stack, settings, ports):
        sender, length = replay_in_background(settings, speed=20.0)
        time.sleep(length * 0.4)
        stop(stack)
        assert wait_until(lambda: "triton_unavailable" in readiness(ports.worker_metrics)[1], 15)
        assert probe(ports.worker_metrics, "/healthz")[0] == 200  # waiting is not dying
        time.sleep(down_s)
        restart_triton(stack, ports)
        sender.join()
        out = collect(settings)
        assert wait_until(lambda: readiness(ports.worker_metrics) == (200, []), 30)
        metrics = scrape(ports.worker_metrics)
        assert stack["worker-1"].is_running
        assert_no_transcript_text(stack["worker-1"].log_path)
    assert metric_value(metrics, "hwm_classifier_errors_total", **({"kind": error_kind} if error_kind else {})) > 0
    assert metric_value(metrics, "hwm_classifier_errors_total", kind="rejected") == 0
    assert metric_value(metrics, "hwm_worker_fatal_total") == 0
    assert_nothing_lost(settings, out, offline_events, exactly_once=True)


CONTEXT_INPUT = '{ name: "CONTEXT" data_type: TYPE_STRING dims: [ 1 ] }'


def model_repository_copy(tmp_path: Path) -> Path:
    """The served model (its version folder linked) with a config.pbtxt of its own, to roll out changes."""
    src = Settings().model_repository / "homework_classifier"
    repo = tmp_path / "model-repository"
    (repo / "homework_classifier").mkdir(parents=True)
    (repo / "homework_classifier" / "1").symlink_to(src / "1", target_is_directory=True)
    # The configs' model_warmup reads its samples from the model folder.
    (repo / "homework_classifier" / "warmup").symlink_to(src / "warmup", target_is_directory=True)
    config = (src / "config.pbtxt").read_text()
    assert CONTEXT_INPUT in config
    (repo / "homework_classifier" / "config.pbtxt").write_text(config)
    return repo


def roll_out_config(repo: Path, incompatible: bool) -> None:
    """An incompatible config gives CONTEXT another shape: Triton answers every request of ours with
    INVALID_ARGUMENT (as after rolling out a model config that does not match the clients)."""
    config = (Settings().model_repository / "homework_classifier" / "config.pbtxt").read_text()
    if incompatible:
        config = config.replace(CONTEXT_INPUT, CONTEXT_INPUT.replace("[ 1 ]", "[ 2 ]"))
        # Its warmup samples keep the old shape and would stop the model from loading at all.
        start = config.index("model_warmup [")
        config = config[:start] + config[config.index("\n]\n", start) + 3:]
    (repo / "homework_classifier" / "config.pbtxt").write_text(config)


def wait_for_fatal_exit(stack: ServiceStack, name: str, port: int, timeout_s: float) -> tuple[int | None, list]:
    """Poll /healthz until the worker exits; returns (exit code, the failing /healthz answers seen)."""
    failing = []
    deadline = time.monotonic() + timeout_s
    while stack[name].is_running and time.monotonic() < deadline:
        status, body = probe(port, "/healthz")
        if status == 503:
            failing.append(json.loads(body))
        time.sleep(0.1)
    return stack[name].returncode, failing


def test_a_rejecting_triton_stops_the_worker_and_its_batch_is_read_again(tmp_path, offline_events):
    repo = model_repository_copy(tmp_path)
    with stack_with_worker(tmp_path, worker_env={"HWM_TRITON_RETRIES": "0", **QUICK_STALL_EXIT},
                           model_repository=repo) as (stack, settings, ports):
        stack["tritonserver"].stop()
        roll_out_config(repo, incompatible=True)
        restart_triton(stack, ports)
        sender, _ = replay_in_background(settings, speed=20.0)
        code, failing = wait_for_fatal_exit(stack, "worker-1", ports.worker_metrics, 60)
        assert code == 1
        assert failing and failing[0] == {"status": "fail", "reasons": ["fatal"]}
        log = stack["worker-1"].log_path.read_text(errors="replace")
        assert "failed with ClassifierUnavailable, not committed" in log and "FATAL (batch_failed)" in log
        assert "offset commit refused" in log or "Commit Offsets" not in log
        assert_no_transcript_text(stack["worker-1"].log_path)
        # The fix: the compatible config is rolled out again, the orchestrator restarts the worker.
        stack["tritonserver"].stop()
        roll_out_config(repo, incompatible=False)
        restart_triton(stack, ports)
        with RestartOnExit(stack, "worker-1"):
            sender.join()
            out = collect(settings)
    assert_nothing_lost(settings, out, offline_events, exactly_once=False)


def test_a_hung_triton_is_a_stall_the_worker_reports_then_exits_on(tmp_path, offline_events):
    """SIGSTOP: connections open, no answers. Timeouts retry forever, so only the stall detector sees it."""
    env = {**QUICK_STALL_EXIT, "HWM_TRITON_TIMEOUT_S": "3"}
    with stack_with_worker(tmp_path, worker_env=env) as (stack, settings, ports):
        sender, length = replay_in_background(settings, speed=20.0)
        time.sleep(length * 0.3)
        os.killpg(stack["tritonserver"].pid, signal.SIGSTOP)
        try:
            assert wait_until(lambda: "stalled" in readiness(ports.worker_metrics)[1], 30)
            assert wait_until(lambda: metric_value(scrape(ports.worker_metrics), "hwm_partition_stalls_total"), 5)
            metrics = scrape(ports.worker_metrics)
            code, failing = wait_for_fatal_exit(stack, "worker-1", ports.worker_metrics, 40)
        finally:
            os.killpg(stack["tritonserver"].pid, signal.SIGCONT)
        assert code == 1 and failing
        log = stack["worker-1"].log_path.read_text(errors="replace")
        assert "stalled:" in log and "FATAL (stalled)" in log
        # Triton's own liveness probe restarts it (a stopped server does not reliably resume: its
        # backend stubs' locks time out meanwhile); then the worker comes back.
        stack["tritonserver"].stop()
        restart_triton(stack, ports)
        with RestartOnExit(stack, "worker-1"):
            sender.join()
            out = collect(settings)
    assert metric_value(metrics, "hwm_partition_stalls_total") >= 1
    assert metric_value(metrics, "hwm_consumer_lag") > 0
    assert_nothing_lost(settings, out, offline_events, exactly_once=False)


def test_worker_sigterm_mid_replay_finishes_its_batch_and_commits(tmp_path, offline_events):
    with stack_with_worker(tmp_path, worker_env=QUICK_STALL_EXIT) as (stack, settings, ports):
        sender, length = replay_in_background(settings, speed=20.0)
        time.sleep(length * 0.4)
        assert stack["worker-1"].stop(timeout=60) == 0  # SIGTERM: graceful, exit code 0
        log = stack["worker-1"].log_path.read_text(errors="replace")
        assert "Wait for streams" in log and "offset commit refused" not in log
        assert committed_but_not_applied(settings) == []  # the stop committed only what it applied
        with RestartOnExit(stack, "worker-1") as orchestrator:
            sender.join()
            out = collect(settings)
    # Everything processed before the stop was committed: nothing is read twice -- unless the
    # replacement stalled and was restarted (then at-least-once redelivers, and ids dedupe).
    assert_nothing_lost(settings, out, offline_events, exactly_once=orchestrator.restarts == 1)


def test_a_broker_restart_that_wipes_everything_stops_the_worker(tmp_path):
    with stack_with_worker(tmp_path, worker_env={"HWM_BROKER_UNREACHABLE_EXIT_S": "60"}) as (stack, settings, ports):
        sender, _ = replay_in_background(settings, speed=50.0)
        sender.join()
        t = settings.topics
        consume(settings, [t.session_summaries], until=lambda r: len(r[t.session_summaries]) >= len(SESSIONS),
                timeout_s=120)
        time.sleep(5)  # past a commit interval: the group has committed offsets
        restart_broker(stack, settings, ports)
        failing_metrics = []

        def fatal_seen():
            text = scrape(ports.worker_metrics)
            if metric_value(text, "hwm_worker_fatal_total", reason="broker_data_lost"):
                failing_metrics.append(text)
            return bool(failing_metrics) or not stack["worker-1"].is_running
        assert wait_until(fatal_seen, 60)
        code, _ = wait_for_fatal_exit(stack, "worker-1", ports.worker_metrics, 40)
        log = stack["worker-1"].log_path.read_text(errors="replace")
    assert code == 1
    assert "broker lost data" in log and "FATAL (broker_data_lost)" in log
    assert failing_metrics and metric_value(failing_metrics[0], "hwm_broker_data_lost_total") >= 1
