"""The worker's probes: one HTTP endpoint (/metrics, /healthz, /readyz) and the periodic checks that
feed ``stream.health.HealthState`` (broker, Triton, partitions, event loop).

The HTTP server runs in its own thread, so /metrics and /healthz answer while the event loop is busy
(table recovery, a long batch), and /healthz still fails when the loop stops turning: its heartbeat
comes from a task on the loop. Responses carry only reasons from closed vocabularies.
"""
from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, make_wsgi_app

from . import metrics
from .config import Settings
from .health import PROBE_REASONS, TP, Evaluation, HealthState

log = logging.getLogger("homework_monitor.health")


# ------------------------------------------------------------------------------------- HTTP
class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass  # a probe every few seconds would flood the log


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def probe_app(health: HealthState, clock: Callable[[], float], registry=REGISTRY):
    """WSGI app: /metrics (Prometheus text), /healthz and /readyz (200 or 503, JSON reasons)."""
    metrics_app = make_wsgi_app(registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics_app(environ, start_response)
        if path in ("/healthz", "/readyz"):
            verdict = health.liveness(clock()) if path == "/healthz" else health.readiness(clock())
            body = json.dumps(verdict.as_dict()).encode()
            start_response("200 OK" if verdict.ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics, /healthz, /readyz\n"]
    return app


def serve_probes(host: str, port: int, health: HealthState,
                 clock: Callable[[], float] = time.monotonic) -> WSGIServer:
    """Start the probe endpoint in a daemon thread; returns the server (``shutdown()`` stops it)."""
    server = make_server(host, port, probe_app(health, clock), server_class=_ThreadingWSGIServer,
                         handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="hwm-probes", daemon=True).start()
    log.info("probes on http://%s:%d (/metrics /healthz /readyz)", host, server.server_port)
    return server


# ----------------------------------------------------------------------------------- broker
def aiokafka_client_kwargs(settings: Settings) -> dict:
    """Connection options in aiokafka's spelling, TLS and SASL included."""
    kwargs: dict = {"bootstrap_servers": settings.kafka_bootstrap.split(","),
                    "security_protocol": settings.kafka_security_protocol,
                    "ssl_context": settings.kafka_ssl_context(), **settings.kafka_sasl_kwargs()}
    return kwargs


class BrokerProbe:
    """The group's committed offsets and the log ends of given partitions, asked with the probe's own
    clients: the worker's consumer may be the very thing that is stuck."""

    def __init__(self, settings: Settings):
        self.group = settings.app_id
        self._kwargs = aiokafka_client_kwargs(settings)
        self._admin = None
        self._consumer = None

    async def observe(self, tps: Iterable[TP]) -> tuple[dict, dict]:
        """(committed offsets, ListOffsets ends); any failure closes the clients for a fresh start."""
        from aiokafka import TopicPartition
        tps = [TopicPartition(t, p) for t, p in tps]
        try:
            admin, consumer = await self._clients()
            if not tps:
                await admin.describe_cluster()  # still says whether the broker answers
                return {}, {}
            committed = await admin.list_consumer_group_offsets(self.group, partitions=tps)
            listed = await consumer.end_offsets(tps)
            return committed, listed
        except BaseException:
            await self.close()
            raise

    async def _clients(self):
        from aiokafka import AIOKafkaConsumer
        from aiokafka.admin import AIOKafkaAdminClient
        if self._admin is None:
            admin = AIOKafkaAdminClient(client_id="hwm-health", request_timeout_ms=10_000, **self._kwargs)
            await admin.start()
            self._admin = admin
        if self._consumer is None:
            consumer = AIOKafkaConsumer(group_id=None, client_id="hwm-health", enable_auto_commit=False,
                                        request_timeout_ms=10_000, **self._kwargs)
            await consumer.start()
            self._consumer = consumer
        return self._admin, self._consumer

    async def close(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        for client, stop in ((admin, "close"), (consumer, "stop")):
            if client is not None:
                try:
                    await getattr(client, stop)()
                except Exception:  # noqa: BLE001 - closing a broken client
                    pass


# ------------------------------------------------------------------------------- the checks
async def heartbeat(health: HealthState, clock: Callable[[], float], every_s: float = 1.0) -> None:
    """Proves the event loop turns (liveness)."""
    while True:
        health.heartbeat(clock())
        await asyncio.sleep(every_s)


async def watch(health: HealthState, probe: BrokerProbe, *, topic: str,
                assignment: Callable[[], Iterable], fetch_highwater: Callable[[Any], int | None],
                classifier_ready: Callable[[], Awaitable[bool]], interval_s: float,
                clock: Callable[[], float], fail: Callable[[str], Awaitable[None]]) -> None:
    """Every ``interval_s``: partitions, broker, Triton; export; stop the worker when the rules say so."""
    exported: set[int] = set()
    try:
        while True:
            tps = {(tp[0], tp[1]) for tp in _safe(assignment, ()) if tp[0] == topic}
            health.assigned(tps, clock())
            try:
                committed, listed = await asyncio.wait_for(probe.observe(tps), timeout=max(interval_s, 10.0))
            except Exception as exc:  # noqa: BLE001 - any failure: the broker did not answer
                metrics.BROKER_PROBE_FAILURES.inc()
                if health.broker_failing_since is None:  # log an outage once, not at every check
                    log.warning("broker probe failed (%s): not ready until the broker answers",
                                type(exc).__name__)
                health.broker_failed(clock())
            else:
                if health.broker_failing_since is not None:
                    log.info("broker answers again")
                fetched = {tp: _safe(lambda tp=tp: fetch_highwater(tp), None) for tp in tps}
                lost = health.broker_observed(clock(), committed, listed, fetched)
                if lost:
                    metrics.BROKER_DATA_LOST.inc(len(lost))
                    log.critical("broker lost data: committed offset or log end went backwards on %s "
                                 "(a broker restarted without its storage?)", _names(lost))
                    await fail("broker_data_lost")
                    return
            health.triton_observed(await classifier_ready())
            evaluation = health.evaluate(clock())
            exported = export(health, evaluation, clock(), exported)
            if evaluation.exit_reason:
                log.critical("giving up: %s (lag without progress %s)", evaluation.exit_reason,
                             {f"{t}-{p}": round(s) for (t, p), s in health.waited(clock()).items()})
                await fail(evaluation.exit_reason)
                return
            await asyncio.sleep(interval_s)
    finally:
        await probe.close()


def export(health: HealthState, evaluation: Evaluation, now: float, exported: set[int]) -> set[int]:
    """Gauges and counters of one check; returns the partitions that now have a lag gauge."""
    live, ready = health.liveness(now), health.readiness(now)
    metrics.WORKER_LIVE.set(live.ok)
    metrics.WORKER_READY.set(ready.ok)
    for reason in PROBE_REASONS:
        metrics.NOT_READY.labels(reason=reason).set(reason in ready.reasons)
    if evaluation.newly_stalled:
        metrics.PARTITION_STALLS.inc(len(evaluation.newly_stalled))
        log.error("stalled: %s had lag and no progress for %.0fs", _names(evaluation.newly_stalled),
                  health.stall_timeout_s)
    current = {p for _, p in evaluation.lags}
    for (_, p), lag in evaluation.lags.items():
        metrics.CONSUMER_LAG.labels(partition=str(p)).set(lag)
    for p in exported - current:
        metrics.CONSUMER_LAG.remove(str(p))
    return current


def _safe(fn, default):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - the consumer is not started (yet) or the partition just moved
        return default


def _names(tps) -> str:
    return ", ".join(f"{t}-{p}" for t, p in sorted(tps))
