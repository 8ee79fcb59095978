"""The Faust worker: a thin edge around ``homework_monitor.stream.processor``.

utterances (keyed by session_id) -> [validate | window | classify (Triton) | decide] ->
homework-events, session-summaries, dead-letter; per-session state in the ``sessions`` Table
(changelog-backed). Processing is at-least-once: outputs are sent before the table is written, event
and summary ids are deterministic, and a redelivered message is recognised by its seq and skipped.
"""
from __future__ import annotations

import logging
import time
import weakref
from collections import Counter

import faust
from faust.streams import _current_event
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport
from prometheus_client import start_http_server

from homework_monitor import logsafe
from homework_monitor.contract import Classifier

from . import metrics
from .classifiers import TritonClassifier
from .config import Settings
from .processor import InboundRecord, process_batch, silence_checks_due
from .schemas import SilenceCheck
from .windowing import SessionState

log = logging.getLogger("homework_monitor.worker")


def _dump(model) -> bytes:
    return model.model_dump_json().encode()


class _FetchWaitConsumerThread(AIOKafkaConsumerThread):
    """faust-streaming hard-codes aiokafka's ``fetch_max_wait_ms=1500``; against a broker that does
    not wake waiting fetches (tansu) that adds up to 1.5 s per message. This app's consumers only take
    the configured wait (aiokafka reads the attribute when the consumer starts)."""
    fetch_max_wait_ms = 1500

    def _create_worker_consumer(self, transport):
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


def _transport_class(fetch_max_wait_ms: int) -> type[AIOKafkaTransport]:
    """A transport whose consumers use ``fetch_max_wait_ms``: scoped to one app, nothing patched."""
    thread_cls = type("FetchWaitConsumerThread", (_FetchWaitConsumerThread,),
                      {"fetch_max_wait_ms": fetch_max_wait_ms})

    class FetchWaitConsumer(AIOKafkaConsumer):
        def _new_consumer_thread(self):
            return thread_cls(self, loop=self.loop, beacon=self.beacon)

    return type("FetchWaitTransport", (AIOKafkaTransport,), {"Consumer": FetchWaitConsumer})


class MonitorApp(faust.App):
    """faust.App whose consumer transport honours ``Settings.consumer_fetch_max_wait_ms``."""

    def __init__(self, *args, fetch_max_wait_ms: int, **kwargs):
        self._transport_cls = _transport_class(fetch_max_wait_ms)
        super().__init__(*args, **kwargs)

    def _new_transport(self):
        return self._transport_cls(self.conf.broker_consumer, self)

    def _create_directories(self) -> None:
        # Faust creates its data dir without parents; HWM_RUN_DIR may not exist yet (a fresh volume).
        self.conf.datadir.mkdir(parents=True, exist_ok=True)
        super()._create_directories()


def create_app(settings: Settings, classifier: Classifier | None = None,
               clock=time.time, serve_metrics: bool = True) -> faust.App:
    """The worker app; ``serve_metrics`` starts the Prometheus endpoint when the worker starts."""
    t = settings.topics
    broker_credentials: faust.types.auth.CredentialsT | None = None
    if settings.kafka_security_protocol.startswith("SASL"):
        broker_credentials = faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None,
            mechanism=settings.kafka_sasl_mechanism, ssl_context=settings.kafka_ssl_context())
    elif settings.kafka_security_protocol == "SSL":
        broker_credentials = faust.SSLCredentials(settings.kafka_ssl_context())
    app = MonitorApp(
        settings.app_id, fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms, broker=[f"kafka://{b}" for b in settings.kafka_bootstrap.split(",")],
        broker_credentials=broker_credentials, store="memory://", value_serializer="raw",
        topic_partitions=settings.topic_partitions, table_standby_replicas=0,
        broker_session_timeout=settings.broker_session_timeout_s,
        processing_guarantee="at_least_once", web_enabled=False,
        producer_acks=-1, topic_disable_leader=True,
        datadir=str(settings.run_dir / f"faust-{settings.worker_id}"))
    classifier = classifier or TritonClassifier(settings)
    utterances = app.topic(t.utterances, key_type=bytes, value_type=bytes,
                           partitions=settings.topic_partitions)
    events = app.topic(t.homework_events, partitions=settings.topic_partitions)
    summaries = app.topic(t.session_summaries, partitions=settings.topic_partitions)
    dead_letter = app.topic(t.dead_letter, partitions=1)
    sessions = app.Table("sessions", default=None, partitions=settings.topic_partitions)  # json k/v
    silence_sent: dict[str, float] = {}
    app.classifier = classifier  # type: ignore[attr-defined]
    app.sessions_table = sessions  # type: ignore[attr-defined]

    def load_state(sid: str) -> SessionState | None:
        raw = sessions.get(sid)
        return SessionState.from_json(raw) if raw else None

    @app.agent(utterances)
    async def monitor(stream):
        async for batch in stream.take_events(settings.batch_size, within=settings.batch_within_s):
            started = clock()
            for e in batch:
                if e.message.timestamp:
                    metrics.INBOUND_LAG.observe(max(0.0, started - e.message.timestamp))
            records = [InboundRecord(e.value, e.key.decode("utf-8", "replace") if e.key else None,
                                     e.message.partition, e.message.offset) for e in batch]
            result = await process_batch(records, load_state, classifier, settings, clock,
                                         source_topic=t.utterances)
            # Outputs first, state second: a crash in between replays the batch from the old state and
            # re-emits the same ids, never loses an event.
            sends = [await dead_letter.send(key=(d.key or "").encode(), value=_dump(d))
                     for d in result.dead_letters]
            sends += [await events.send(key=e.session_id.encode(), value=_dump(e)) for e in result.events]
            sends += [await summaries.send(key=s.session_id.encode(), value=_dump(s)) for s in result.summaries]
            for fut in sends:
                await fut
            for sid, state in result.states.items():
                # Table writes go to the changelog partition of the event that carried the session,
                # which take_events does not set per event: point the context at it explicitly.
                _current_event.set(weakref.ref(batch[result.last_record_of[sid]]))
                sessions[sid] = state.to_json()
            _observe(result)
            if result.dead_letters:
                log.warning("dead-lettered %d message(s): %s", len(result.dead_letters),
                            dict(Counter(d.reason for d in result.dead_letters)))

    @app.timer(interval=settings.silence_check_interval_s)
    async def silence_timer():
        now = clock()
        # Ended sessions keep only a tombstone; skip them before parsing.
        states = {k: SessionState.from_json(v) for k, v in list(sessions.items())
                  if v and not v.get("ended")}
        metrics.ACTIVE_SESSIONS.set(len(states))
        for sid in [k for k in silence_sent if k not in states]:
            del silence_sent[sid]
        for sid in silence_checks_due(states, now, settings.silence_flush_s, silence_sent):
            silence_sent[sid] = states[sid].last_activity_at
            await utterances.send(key=sid.encode(), value=_dump(SilenceCheck(session_id=sid, at=now)))

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # faust's signal typing
    async def on_assigned(app, assigned, **kwargs):  # noqa: ARG001 - faust signal signature
        mine = sorted(tp.partition for tp in assigned if tp.topic == t.utterances)
        log.info("partitions assigned: %s %s", t.utterances, mine)

    @app.task
    async def on_start():
        if serve_metrics:
            start_http_server(settings.metrics_port)
        await classifier.start()
        log.info("classifier ready: %s", classifier.model_version)

    app.monitor_agent = monitor  # type: ignore[attr-defined]
    return app


def _observe(result) -> None:
    for outcome, n in result.outcomes.items():
        metrics.UTTERANCES.labels(result=outcome).inc(n)
    for d in result.dead_letters:
        metrics.DEAD_LETTERS.labels(reason=d.reason).inc()
    metrics.MICRODIALOGUES.inc(result.n_microdialogues)
    for e in result.events:
        metrics.EVENTS.labels(category=e.category).inc()
    for s in result.summaries:
        metrics.SUMMARIES.labels(homework_assigned=str(s.homework_assigned).lower()).inc()
    for lat in result.latencies:
        metrics.LATENCY.observe(lat)


def run_worker(settings: Settings) -> None:
    """Entry point of ``homework-monitor worker``: the Faust worker (metrics on its own port, no web UI)."""
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    worker_app = create_app(settings)
    from faust import Worker
    worker = Worker(worker_app, loglevel=settings.log_level, quiet=True)
    log.info("worker %s: broker %s, triton %s, metrics :%d", settings.worker_id,
             settings.kafka_bootstrap, settings.triton_url, settings.metrics_port)
    worker.execute_from_commandline()


# The module-level app, as Faust users expect: ``faust -A homework_monitor.stream.app worker -l info``
# runs the same worker as ``homework-monitor worker`` (settings from HWM_* variables).
# That path does not pass through homework_monitor.cli, which installs the log guard: install it here too.
logsafe.install()
app = create_app(Settings())
