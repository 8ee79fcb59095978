"""The store's sink: ``homework-events``, ``session-summaries``, ``nudges`` and ``session-opened`` into the
database (``homework-monitor sink``).

A plain kafka-python consumer in a consumer group, not a Faust agent: the sink's unit of work is a
database transaction, and its offsets must be committed only after that transaction commits. With
auto-commit off the loop is simply: poll a batch -> decode every record -> write all the good ones in
one transaction -> send the bad ones to ``dead-letter`` and wait for the broker's ack -> commit the
batch's offsets. A crash anywhere before the commit redelivers the batch; the writes are idempotent
(``ingest``), so at-least-once delivery stores every message exactly once.

Failures:
* a record that is not a valid message (not JSON, wrong schema, an id out of bounds): a dead letter with
  its reason (``schema_error``, ``malformed_json``...), the rest of the batch is stored, the sink goes on;
* a record the database refuses (constraint, data error): the batch is retried record by record and
  only that record is dead-lettered (``processing_error``, with the error type only);
* the database unreachable or locked: retried with capped exponential backoff for as long as it takes,
  each failure logged; nothing is committed meanwhile, so nothing is lost and nothing skipped.
Logs name topics, partitions, offsets, counts, reasons and exception types, never a message's content.
"""
from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata
from pydantic import BaseModel, TypeAdapter, ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, SQLAlchemyError
from tenacity import RetryError, Retrying, retry_if_exception, stop_when_event_set, wait_exponential

from homework_monitor.stream.config import Settings
from homework_monitor.stream.schemas import (
    DETAIL_MAX_CHARS,
    Assignment,
    DeadLetter,
    HomeworkEvent,
    Id,
    Nudge,
    Review,
    SessionOpened,
    SessionSummary,
)
from homework_monitor.stream.validation import Rejected, as_bytes, dead_letter, decode_json_object

from .db import Store
from .ingest import StoredMessage, apply
from .retention import purge

log = logging.getLogger(__name__)

# Kafka's default message size limit is 1 MB; a summary of a long session with many quotes stays far
# below. Anything larger is refused before it is decoded.
MAX_RECORD_BYTES = 4 * 1024 * 1024
MAX_POLL_RECORDS = 500
# Message ids are stable_id() hashes (24 hex chars); model versions are short names. Column sizes.
MAX_KEY_CHARS = 64
_ID = TypeAdapter(Id)
_ID_FIELDS = ("session_id", "therapist_id", "client_id", "program_id", "previous_session_id")
_KEY_FIELDS = ("event_id", "summary_id", "nudge_id", "model_version")
_MODELS: tuple[type[BaseModel], ...] = (HomeworkEvent, SessionSummary, Nudge, SessionOpened, Assignment, Review)
_KNOWN_NAMES = frozenset().union(*(m.model_fields for m in _MODELS))


def topic_models(settings: Settings) -> dict[str, type[StoredMessage]]:
    t = settings.topics
    return {t.homework_events: HomeworkEvent, t.session_summaries: SessionSummary, t.nudges: Nudge,
            t.session_opened: SessionOpened}


def _field_paths(exc: ValidationError) -> str:
    # Field locations and error types only (the values may be transcript text); unknown keys masked.
    parts = list(dict.fromkeys(
        ".".join(str(p) if isinstance(p, int) or p in _KNOWN_NAMES else "<other field>" for p in e["loc"])
        + f": {e['type']}" for e in exc.errors(include_url=False, include_input=False)))
    return "; ".join(parts[:8])[:DETAIL_MAX_CHARS]


def _bounds_problem(message: BaseModel) -> Rejected | None:
    """Ids must fit the store's columns and the wire's id rules (the output schemas leave them open)."""
    for name in _ID_FIELDS:
        value = getattr(message, name, None)
        if value is not None:
            try:
                _ID.validate_python(value)
            except ValidationError as exc:
                return Rejected("schema_error", f"{name}: {exc.errors()[0]['type']}")
    for name in _KEY_FIELDS:
        value = getattr(message, name, None)
        if value is not None and not 0 < len(value) <= MAX_KEY_CHARS:
            return Rejected("schema_error", f"{name}: length must be 1..{MAX_KEY_CHARS}")
    return None


def decode(model: type[StoredMessage], raw: Any) -> StoredMessage | Rejected:
    """One record's value -> its message, or why not. Never raises."""
    try:
        data = as_bytes(raw)
        if isinstance(data, Rejected):
            return data
        obj = decode_json_object(data, max_bytes=MAX_RECORD_BYTES)
        if isinstance(obj, Rejected):
            return obj
        try:
            message = model.model_validate(obj)
        except ValidationError as exc:
            return Rejected("schema_error", _field_paths(exc))
        return _bounds_problem(message) or message
    except Exception as exc:  # noqa: BLE001 - decoding never raises: an unforeseen failure is a refusal
        return Rejected("schema_error", f"validation failed: {type(exc).__name__}")


def is_transient(exc: BaseException) -> bool:
    """Database errors worth waiting out (unreachable, restarting, locked), as opposed to a refusal."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, OperationalError | InterfaceError)


class Stopped(Exception):
    """The sink was asked to stop while it waited for the database."""


@dataclass
class BatchResult:
    stored: Counter = field(default_factory=Counter)  # topic -> records written (new or redelivered)
    dead: Counter = field(default_factory=Counter)  # reason -> dead letters
    offsets: dict[Any, int] = field(default_factory=dict)  # TopicPartition -> next offset to commit


class StoreSink:
    """Consumes the four topics into ``store``. ``consumer``/``producer`` are kafka-python clients (or
    anything with the same poll/commit/send/flush); ``run`` loops until ``stop`` is set."""

    def __init__(self, settings: Settings, store: Store, consumer: Any, producer: Any,
                 stop: threading.Event | None = None, clock: Callable[[], float] = time.time):
        self.settings, self.store, self.consumer, self.producer = settings, store, consumer, producer
        self.models = topic_models(settings)
        self.stop = stop or threading.Event()
        self.clock = clock
        self.next_purge = 0.0

    # --- one batch --------------------------------------------------------------------------------
    def _retrying(self) -> Retrying:
        def waiting(state) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning("store unavailable (%s), attempt %d: retrying in %.1fs; nothing is committed meanwhile",
                        type(exc).__name__, state.attempt_number, state.next_action.sleep if state.next_action else 0)
        return Retrying(retry=retry_if_exception(is_transient), wait=wait_exponential(multiplier=0.2, max=30),
                        stop=stop_when_event_set(self.stop), before_sleep=waiting, sleep=self._sleep,
                        reraise=False)

    def _sleep(self, seconds: float) -> None:
        self.stop.wait(seconds)

    def _write(self, messages: list[StoredMessage]) -> None:
        def once() -> None:
            with self.store.session() as db:
                for m in messages:
                    apply(db, m)
        try:
            self._retrying()(once)
        except RetryError as exc:
            raise Stopped from exc

    def write(self, items: list[tuple[Any, StoredMessage]]) -> list[tuple[Any, Rejected]]:
        """Write ``(record, message)`` pairs in one transaction; on a refusal, one by one. Returns the
        records the database refused (for dead letters)."""
        if not items:
            return []
        try:
            self._write([m for _, m in items])
            return []
        except SQLAlchemyError as exc:
            log.warning("store refused a batch of %d (%s): writing its records one by one", len(items),
                        type(exc).__name__)
        refused = []
        for record, message in items:
            try:
                self._write([message])
            except SQLAlchemyError as exc:
                log.error("store refused %s[%d]@%d (%s): dead-lettered", record.topic, record.partition,
                          record.offset, type(exc).__name__)
                refused.append((record, Rejected("processing_error", f"store write failed: {type(exc).__name__}")))
        return refused

    def dead_letter(self, record: Any, rejected: Rejected) -> DeadLetter:
        key = record.key.decode("utf-8", "replace") if isinstance(record.key, bytes) else record.key
        return dead_letter(record.value, rejected, received_at=self.clock(), source_topic=record.topic,
                           partition=record.partition, offset=record.offset, key=key)

    def handle(self, records: Iterable[Any]) -> BatchResult:
        """Decode, store and dead-letter one batch; returns what to commit. Commits nothing itself."""
        result = BatchResult()
        good: list[tuple[Any, StoredMessage]] = []
        bad: list[tuple[Any, Rejected]] = []
        for record in records:
            model = self.models.get(record.topic)
            decoded = decode(model, record.value) if model else Rejected("processing_error", "unexpected topic")
            if isinstance(decoded, Rejected):
                log.warning("refused %s[%d]@%d: %s (%s)", record.topic, record.partition, record.offset,
                            decoded.reason, decoded.detail)
                bad.append((record, decoded))
            else:
                good.append((record, decoded))
            tp = (record.topic, record.partition)
            result.offsets[tp] = max(result.offsets.get(tp, -1), record.offset + 1)
        refused = self.write(good)
        refused_ids = {id(r) for r, _ in refused}
        for record, _ in good:
            if id(record) not in refused_ids:
                result.stored[record.topic] += 1
        for record, rejected in bad + refused:
            letter = self.dead_letter(record, rejected)
            self.producer.send(self.settings.topics.dead_letter, key=(letter.key or "").encode(),
                               value=letter.model_dump_json().encode())
            result.dead[rejected.reason] += 1
        if result.dead:
            self.producer.flush(timeout=60)  # acknowledged before the offsets that cover them are committed
        return result

    # --- the loop ---------------------------------------------------------------------------------
    def commit(self, offsets: dict[tuple[str, int], int]) -> None:
        try:
            self.consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()})
        except CommitFailedError:
            # The group rebalanced while the batch was written: its new owner reads it again, and the
            # writes are idempotent, so this costs a redelivery, not a loss.
            log.warning("offset commit refused after a rebalance: %d partition(s) will be read again", len(offsets))

    def purge_if_due(self) -> None:
        now = time.monotonic()
        if now < self.next_purge:
            return
        self.next_purge = now + self.settings.store.purge_interval_hours * 3600
        try:
            with self.store.session() as db:
                r = purge(db, self.settings.store.retention_days)
        except SQLAlchemyError as exc:
            log.error("retention purge failed (%s); retrying at the next interval", type(exc).__name__)
            return
        log.info("retention purge (older than %s): %d sessions, %d events, %d nudges, %d feedback, %d audit, "
                 "%d logins deleted", r.cutoff.isoformat(timespec="seconds"), r.sessions, r.events, r.nudges,
                 r.feedback, r.audit, r.logins)

    def run(self) -> None:
        while not self.stop.is_set():
            self.purge_if_due()
            polled = self.consumer.poll(timeout_ms=500, max_records=MAX_POLL_RECORDS)
            records = [r for batch in polled.values() for r in batch]
            if not records:
                continue
            try:
                result = self.handle(records)
            except Stopped:
                break
            self.commit(result.offsets)
            log.info("stored %d record(s) %s; %d dead letter(s) %s", sum(result.stored.values()),
                     dict(result.stored), sum(result.dead.values()), dict(result.dead))


class _AssignmentLog(ConsumerRebalanceListener):
    """Logs partition assignments: the local stack waits for "partitions assigned" before it goes on."""

    def on_partitions_revoked(self, revoked) -> None:
        log.info("partitions revoked: %d", len(revoked))

    def on_partitions_assigned(self, assigned) -> None:
        log.info("partitions assigned: %d", len(assigned))


def make_consumer(settings: Settings) -> KafkaConsumer:
    t = settings.topics
    session_ms = int(settings.broker_session_timeout_s * 1000)
    consumer = KafkaConsumer(
        group_id=settings.store.sink_group or f"{settings.app_id}-store-sink",
        enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=MAX_POLL_RECORDS,
        session_timeout_ms=session_ms, heartbeat_interval_ms=max(1000, session_ms // 3),
        fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms, **settings.kafka_client_kwargs())
    consumer.subscribe([t.homework_events, t.session_summaries, t.nudges, t.session_opened],
                       listener=_AssignmentLog())
    return consumer


def make_producer(settings: Settings) -> KafkaProducer:
    return KafkaProducer(acks="all", retries=5, **settings.kafka_client_kwargs())


def run_sink(settings: Settings) -> int:
    """``homework-monitor sink``: migrate, then consume until SIGTERM/SIGINT. Exit code 0 on a stop."""
    from .db import safe_url, store_url
    store = Store.open(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    consumer, producer = make_consumer(settings), make_producer(settings)
    log.info("store sink started: %s -> %s", settings.kafka_bootstrap, safe_url(store_url(settings)))
    try:
        StoreSink(settings, store, consumer, producer, stop).run()
    finally:
        consumer.close(autocommit=False)
        producer.close(timeout=10)
        store.close()
        log.info("store sink stopped")
    return 0

