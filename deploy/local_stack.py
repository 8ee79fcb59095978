"""The local stack on one machine: tansu broker -> topics -> tritonserver -> Faust worker(s).

Used by ``homework-monitor demo``, the integration tests and the benchmarks, so all three run the
same real services. Each service logs to its own file under ``<run_dir>/logs``.
``HWM_LOCAL_WORKERS`` workers share one consumer group (:func:`start_workers`); tritonserver runs
``HWM_TRITON_INSTANCES`` model instances of ``HWM_TRITON_ARTIFACT`` (the default model, or the student).
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from homework_monitor.stream.config import Settings

from .broker import create_topics, tansu_command, wait_for_port
from .services import ServiceStack, free_port, scrubbed_environ
from .triton_runtime import (
    configured_artifact,
    configured_instances,
    prepare_triton_dist,
    repository_with_instances,
    tritonserver_command,
    wait_until_ready,
)


@dataclass(frozen=True)
class Ports:
    kafka: int = 9092
    triton_http: int = 8000
    triton_grpc: int = 8001
    triton_metrics: int = 8002
    worker_metrics: int = 9100

    @classmethod
    def free(cls) -> Ports:
        return cls(*(free_port() for _ in range(5)))


def changelog_topic(settings: Settings) -> str:
    """Faust's changelog of the ``sessions`` table (``<app id>-<table>-changelog``)."""
    return f"{settings.app_id}-sessions-changelog"


def all_topics(settings: Settings) -> dict[str, int]:
    """Our topics plus Faust's table changelog, pre-created with matching partition counts."""
    topics = settings.topic_partition_counts()
    topics[changelog_topic(settings)] = settings.topic_partitions
    return topics


def topic_configs(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic configs beyond the broker defaults: the dead-letter retention (Settings.topic_configs), and
    the compacted changelog: recovery then reads one record per live key, and a deleted (expired)
    session's tombstone removes the key for good."""
    return {**settings.topic_configs(), changelog_topic(settings): {"cleanup.policy": "compact"}}


def wait_for_log(path: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{text!r} not seen in {path} after {timeout_s:.0f}s")


def worker_env(settings: Settings, worker_id: str, metrics_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"HWM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "HWM_TRITON_URL": settings.triton_url,
                "HWM_APP_ID": settings.app_id, "HWM_WORKER_ID": worker_id,
                "HWM_METRICS_PORT": str(metrics_port), "HWM_RUN_DIR": str(settings.run_dir.resolve()),
                "HWM_EVENT_THRESHOLD": str(settings.event_threshold),
                "HWM_SILENCE_FLUSH_S": str(settings.silence_flush_s),
                "HWM_TOPIC_PARTITIONS": str(settings.topic_partitions), "PYTHONUNBUFFERED": "1"})
    return env


def _made(path: Path) -> Path:
    path = path.resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_broker(stack: ServiceStack, settings: Settings, ports: Ports, log_dir: Path) -> Settings:
    stack.add("tansu", tansu_command("127.0.0.1", ports.kafka), scrubbed_environ(), log_dir / "tansu.log",
              lambda: wait_for_port("127.0.0.1", ports.kafka, 20))
    # The broker starts empty (memory storage): table state kept on disk by earlier runs' workers
    # describes changelogs and offsets that no longer exist, and must not be recovered.
    for datadir in settings.run_dir.glob("faust-*"):
        shutil.rmtree(datadir)
    settings = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{ports.kafka}"})
    create_topics(settings.kafka_bootstrap, all_topics(settings), configs=topic_configs(settings),
                  client_kwargs=settings.kafka_client_kwargs())
    return settings


def served_repository(settings: Settings) -> Path:
    """``settings.model_repository``, or a copy under the run dir whose CPU config runs
    ``settings.triton_instances`` model instances and serves ``settings.triton_artifact`` where the
    config says otherwise."""
    if (configured_instances(settings.model_repository) == [settings.triton_instances]
            and configured_artifact(settings.model_repository) == settings.triton_artifact):
        return settings.model_repository
    return repository_with_instances(settings.model_repository, _made(settings.run_dir) / "model-repository",
                                     settings.triton_instances, artifact=settings.triton_artifact)


def start_triton(stack: ServiceStack, settings: Settings, ports: Ports, log_dir: Path) -> Settings:
    dist = prepare_triton_dist(settings.triton_dist_dir)
    address = settings.triton_bind_address
    cmd = tritonserver_command(dist, served_repository(settings), ports.triton_http, ports.triton_grpc,
                               ports.triton_metrics, address=address)
    host = "127.0.0.1" if address in ("0.0.0.0", "::", "") else address  # a wildcard bind answers on loopback
    log = log_dir / "tritonserver.log"
    stack.add("tritonserver", cmd, dist.env, log,
              lambda: wait_until_ready(ports.triton_http, 120, host=host, log_path=log), cwd=_made(settings.run_dir))
    return settings.model_copy(update={"triton_url": f"{host}:{ports.triton_grpc}"})


def worker_command(faust_cli: bool = False) -> list[str]:
    """``homework-monitor worker``, or the same app through Faust's own CLI (the module-level app)."""
    if faust_cli:
        return [sys.executable, "-m", "faust", "-A", "homework_monitor.stream.app", "worker", "-l", "info",
                "--without-web"]
    return [sys.executable, "-m", "homework_monitor.cli", "worker"]


def start_worker(stack: ServiceStack, settings: Settings, log_dir: Path, worker_id: str = "worker-1",
                 metrics_port: int | None = None, faust_cli: bool = False,
                 extra_env: Mapping[str, str] | None = None) -> int:
    """Start a worker (``extra_env``: more ``HWM_*`` settings) and wait until it owns partitions."""
    port = metrics_port or free_port()
    log = log_dir / f"{worker_id}.log"
    env = {**worker_env(settings, worker_id, port), **(extra_env or {})}
    stack.add(worker_id, worker_command(faust_cli), env, log,
              lambda: wait_for_log(log, "classifier ready", 90), cwd=_made(settings.run_dir))
    # The group join completes about half a session timeout after start (tansu): wait for assignment.
    wait_for_log(log, "partitions assigned", 60)
    return port


def worker_ids(count: int) -> list[str]:
    return [f"worker-{i}" for i in range(1, count + 1)]


ASSIGNED = re.compile(r"partitions assigned: \S+ \[([\d, ]*)\]")


def assigned_partitions(log_path: Path) -> list[int] | None:
    """The source partitions a worker's latest assignment gave it (its log), None before the first."""
    try:
        found = ASSIGNED.findall(log_path.read_text(errors="replace"))
    except FileNotFoundError:
        return None
    return [int(p) for p in found[-1].split(",") if p.strip()] if found else None


def group_assignment(stack: ServiceStack, names: Sequence[str]) -> dict[str, list[int] | None]:
    """Each running worker's latest assignment (stopped workers are left out)."""
    return {n: assigned_partitions(stack[n].log_path) for n in names if stack[n].is_running}


def wait_for_group(stack: ServiceStack, names: Sequence[str], partitions: int, timeout_s: float) -> dict[str, list[int]]:
    """Wait until the running workers among ``names`` split the source partitions among them: each was
    assigned some (at least one while there are as many partitions as workers), no partition twice,
    none left out. A rebalance in progress shows as an overlap or a worker without an assignment yet."""
    deadline = time.monotonic() + timeout_s
    while True:
        now = group_assignment(stack, names)
        owned = [p for parts in now.values() for p in parts or ()]
        if (now and all(parts is not None for parts in now.values())
                and sorted(owned) == list(range(partitions))
                and (len(now) > partitions or all(now.values()))):
            return {n: list(parts or ()) for n, parts in now.items()}
        if time.monotonic() > deadline:
            raise TimeoutError(f"workers did not settle on {partitions} partitions in {timeout_s:.0f}s: {now}")
        time.sleep(0.2)


def start_workers(stack: ServiceStack, settings: Settings, log_dir: Path, metrics_ports: Sequence[int] = (),
                  extra_env: Mapping[str, str] | None = None, timeout_s: float = 120) -> dict[str, int]:
    """Start ``settings.local_workers`` workers (worker-1..N) in one consumer group, all at once, each
    with its own metrics port (``metrics_ports`` in order, else free ones) and its own state dir
    (``<run_dir>/faust-<worker id>``); wait until the group has split the partitions among them.
    Returns each worker's metrics port."""
    names = worker_ids(settings.local_workers)
    ports = {n: metrics_ports[i] if i < len(metrics_ports) else free_port() for i, n in enumerate(names)}
    for name in names:  # started together: one rebalance for all, rather than one per worker
        log = log_dir / f"{name}.log"
        env = {**worker_env(settings, name, ports[name]), **(extra_env or {})}
        stack.add(name, worker_command(), env, log, lambda: None, cwd=_made(settings.run_dir))
    for name in names:
        proc = stack[name]
        try:
            wait_for_log(proc.log_path, "classifier ready", 90)
        except TimeoutError as exc:
            raise RuntimeError(f"{name} not ready: {exc}\n--- {proc.log_path} (tail) ---\n{proc.tail(40)}") from exc
    settled = wait_for_group(stack, names, settings.topic_partitions, timeout_s)
    if exited := [n for n in names if n not in settled]:
        raise RuntimeError(f"{exited} exited while the group formed; logs in {log_dir}")
    return ports


def start_sink(stack: ServiceStack, settings: Settings, log_dir: Path, name: str = "sink",
               extra_env: Mapping[str, str] | None = None) -> None:
    """Start ``homework-monitor sink`` (topics -> the store) and wait until it owns partitions. The store is
    ``HWM_STORE_URL`` when set, else ``<run_dir>/store.sqlite3``."""
    log = log_dir / f"{name}.log"
    env = {**os.environ, "HWM_KAFKA_BOOTSTRAP": settings.kafka_bootstrap, "HWM_APP_ID": settings.app_id,
           "HWM_RUN_DIR": str(settings.run_dir.resolve()), "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    stack.add(name, [sys.executable, "-m", "homework_monitor.cli", "sink"], env, log,
              lambda: wait_for_log(log, "partitions assigned", 60), cwd=_made(settings.run_dir))


def wait_for_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not answering after {timeout_s:.0f}s")


def start_web(stack: ServiceStack, settings: Settings, log_dir: Path, port: int | None = None,
              name: str = "web", extra_env: Mapping[str, str] | None = None) -> str:
    """Start ``homework-monitor web`` over the same store as the sink (``HWM_STORE_URL`` or
    ``<run_dir>/store.sqlite3``) on loopback; wait until it answers; returns its base URL."""
    port = port or free_port()
    log = log_dir / f"{name}.log"
    env = {**os.environ, "HWM_RUN_DIR": str(settings.run_dir.resolve()), "HWM_WEB_HOST": "127.0.0.1",
           "HWM_WEB_PORT": str(port), "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    url = f"http://127.0.0.1:{port}"
    stack.add(name, [sys.executable, "-m", "homework_monitor.cli", "web"], env, log,
              lambda: wait_for_http(f"{url}/healthz", 60), cwd=_made(settings.run_dir))
    return url


def restart_triton(stack: ServiceStack, ports: Ports, name: str = "tritonserver") -> None:
    """Start a stopped (or killed) tritonserver again, same command and ports; wait until it is ready."""
    proc = stack[name]
    proc.start()
    wait_until_ready(ports.triton_http, 120, log_path=proc.log_path, is_alive=lambda: proc.is_running)


def restart_worker(stack: ServiceStack, worker_id: str) -> None:
    """Start a stopped (or exited) worker again, same command and settings; wait until it owns partitions."""
    proc = stack[worker_id]
    proc.start()
    wait_for_log(proc.log_path, "classifier ready", 90)
    wait_for_log(proc.log_path, "partitions assigned", 60)


def restart_broker(stack: ServiceStack, settings: Settings, ports: Ports, name: str = "tansu") -> None:
    """Stop the broker and start it again on the same port. tansu keeps nothing: topics, offsets and
    the table changelog are gone, as after a crash of a broker without persistent storage."""
    proc = stack[name]
    proc.stop()
    proc.start()
    wait_for_port("127.0.0.1", ports.kafka, 20)
