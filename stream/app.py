"""The Faust worker: a thin edge around ``homework_monitor.stream.processor``.

utterances (keyed by session_id) -> [validate | consent | window | classify (Triton) | decide | review |
nudge rules] -> homework-events, session-summaries, nudges, session-opened, dead-letter; per-session state
in the ``sessions`` Table (changelog-backed); per-client homework history in the ``client_history``
GlobalTable, fed from the summaries through a topic keyed by client (docs/NUDGES.md). Processing is at-least-once: outputs are on the broker before their batch's
states are staged, and the staged states are written before each offset commit; event and summary ids
are deterministic, and a redelivered message is recognised by its seq and skipped.

A batch that cannot be finished is never committed past: the worker blocks its offset commits, its
/healthz fails, and it stops with exit code 1 for the orchestrator to restart it (``consume_batches``,
``WorkerFailed``). Health and readiness come from ``stream.health`` (rules) and ``stream.probes``.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import os
import signal
import threading
import time
import traceback
import warnings
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import cast

import faust
from faust.exceptions import AlreadyConfiguredWarning
from faust.streams import _current_event
from faust.tables.globaltable import GlobalTable as FaustGlobalTable
from faust.tables.table import Table as FaustTable
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.transport.drivers.aiokafka import Transport as AIOKafkaTransport
from faust.types import EventT
from mode import Worker as ModeWorker

from homework_monitor import logsafe
from homework_monitor.contract import Classifier, ContractMismatch

from . import metrics, probes
from .classifiers import ClassifierUnavailable, TritonClassifier
from .config import Settings
from .expiry import expired_by_partition, is_expired, session_fields, with_retirement
from .followup import ClientHistory, history_of, record_session
from .health import HealthState
from .nudges import NudgeConfig
from .processor import InboundRecord, nudge_checks_due, process_batch, silence_checks_due
from .progress import SourceProgress, marker_key, marker_next_offset, marker_value, plan_position
from .schemas import SessionSummary, SilenceCheck
from .windowing import SessionState

log = logging.getLogger("homework_monitor.worker")


# A nudge check that got no answer (lost, or its batch still in flight) is sent again after this long.
NUDGE_CHECK_RESEND_S = 5.0


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


class _StatePositionedConsumer(AIOKafkaConsumer):
    """Source partitions start where the recovered table state needs them, with nothing fetched before.

    After recovering the tables, faust resumes the source partitions and only then seeks them to the
    committed offsets, while its fetcher (started to read the changelogs) is running. Records fetched
    in between reach the stream buffer and advance faust's read offsets; their re-fetch after the seek
    is dropped as already read; ``flow_control.resume()`` then clears the buffer. The records in
    between are never processed, and faust's gap bookkeeping lets the commit pass them
    (docs/RESTARTS.md). Here the source partitions stay paused until they are positioned, and the
    position comes from the state's own marker (``SourceGate.position``).
    """
    _unpositioned: frozenset = frozenset()

    def _gate(self) -> SourceGate | None:
        return getattr(self.app, "source_gate", None)

    async def on_partitions_assigned(self, assigned, generation_id: int = 0) -> None:
        gate = self._gate()
        self._unpositioned = frozenset(tp for tp in assigned if gate and tp.topic == gate.topic)
        await super().on_partitions_assigned(assigned, generation_id)

    async def on_partitions_revoked(self, revoked) -> None:
        await super().on_partitions_revoked(revoked)  # faust waits here for the batches in flight
        gate = self._gate()
        if gate:
            # What was applied is stored before the partitions' next owner reads the table, so it
            # starts where this worker stopped instead of applying those records again.
            await _write_unless_blocked(self.app, gate)
            gate.forget(tp.partition for tp in revoked if tp.topic == gate.topic)

    def resume_partitions(self, tps) -> None:
        super().resume_partitions(set(tps) - self._unpositioned)

    async def perform_seek(self) -> None:
        await super().perform_seek()  # committed offsets (faust also calls this mid-rebalance)
        gate = self._gate()
        if not self._unpositioned or gate is None or not self.flow_active:
            return  # nothing waiting, or a rebalance is under way (tables not recovered yet)
        await gate.position(self, self._unpositioned & self.assignment())
        ready, self._unpositioned = self._unpositioned, frozenset()
        super().resume_partitions(ready & self.assignment())


async def _write_unless_blocked(app, gate: SourceGate) -> None:
    """``gate.write()``, unless the worker is failing (a batch it could not finish): then it writes
    nothing more, and its replacement applies again what the table does not hold."""
    health = getattr(app, "health", None)
    if health is None or not health.commits_blocked:
        await gate.write()


def _transport_class(fetch_max_wait_ms: int) -> type[AIOKafkaTransport]:
    """A transport whose consumers use ``fetch_max_wait_ms``: scoped to one app, nothing patched."""
    thread_cls = type("FetchWaitConsumerThread", (_FetchWaitConsumerThread,),
                      {"fetch_max_wait_ms": fetch_max_wait_ms})

    class FetchWaitConsumer(_StatePositionedConsumer):
        def _new_consumer_thread(self):
            return thread_cls(self, loop=self.loop, beacon=self.beacon)

        async def _commit(self, offsets) -> bool:
            # Every commit path (the periodic one, rebalance, stop) ends here. Once a batch could not
            # be finished, faust may still ack its events (take_events acks in a ``finally``): commit
            # nothing more, so a restarted worker reads that batch again.
            health = getattr(self.app, "health", None)
            if health is not None and health.commits_blocked:
                metrics.COMMITS_REFUSED.inc()
                log.warning("offset commit refused (%s): the batch in flight was not finished",
                            health.commits_blocked)
                return False
            gate = self._gate()
            if gate is not None:
                # The committed offsets are of acked records, whose batches have finished: their
                # states and markers go to the table first, so the commit never passes the state.
                await gate.write()
            return await super()._commit(offsets)

    return type("FetchWaitTransport", (AIOKafkaTransport,), {"Consumer": FetchWaitConsumer})


class MonitorApp(faust.App):
    """faust.App whose consumer transport honours ``Settings.consumer_fetch_max_wait_ms``."""

    def __init__(self, *args, fetch_max_wait_ms: int, **kwargs):
        self._transport_cls = _transport_class(fetch_max_wait_ms)
        super().__init__(*args, **kwargs)

    def _new_transport(self):
        return self._transport_cls(self.conf.broker_consumer, self)

    #: Set by create_app: started first thing when the app starts (probes answer during recovery).
    on_first_start_hook: Callable[[], Awaitable[None]] | None = None

    async def on_first_start(self) -> None:
        await super().on_first_start()
        if self.on_first_start_hook is not None:
            await self.on_first_start_hook()

    def _create_directories(self) -> None:
        # Faust creates its data dir without parents; HWM_RUN_DIR may not exist yet (a fresh volume).
        self.conf.datadir.mkdir(parents=True, exist_ok=True)
        super()._create_directories()


class _ChangelogWaits:
    """Collects a table's changelog writes so that an agent can wait for the broker to have them before
    its events' offsets become committable (faust's flush before a commit gives up after 0.1 s without
    progress and can commit past state it never wrote)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._changelog_pending: list = []

    def send_changelog(self, *args, **kwargs):
        fut = super().send_changelog(*args, **kwargs)
        self._changelog_pending.append(fut)
        return fut

    async def changelog_written(self) -> set[int]:
        """Wait for the changelog writes made since the last call; the partitions they went to."""
        pending, self._changelog_pending = self._changelog_pending, []
        for fut in pending:
            await fut
        return {fut.message.partition for fut in pending}


class SessionTable(_ChangelogWaits, FaustTable):
    """The sessions table (per session, partitioned like the utterances)."""


class ClientHistoryTable(_ChangelogWaits, FaustGlobalTable):
    """The per-client homework history: a GlobalTable, every worker holds all of it (docs/NUDGES.md)."""


class DecodedStates:
    """The live (not ended) session states this worker wrote or read, decoded, and the states it
    applied but has not written to the table yet.

    Decoded: the table stays the record; this spares decoding a session's JSON on every utterance and
    every silence tick (a third of the worker's time with 1,000 sessions, benchmarks/stream_path.py).
    Cleared when partitions are assigned (every rebalance, revocations included) and again when they
    are positioned after recovery, because recovery (or another worker) changes the table underneath.
    Ended sessions are never held once written: their tombstones expire from the table on their own
    schedule.

    Unwritten (``stage``): the agent stages each batch's states here, and ``SourceGate.write`` takes
    them to the table before the next offset commit, so a session that gets several utterances between
    two commits is written once (one table write per input was half of the stream path's cost). They
    win over the table until written. Clearing drops them: their partitions are then positioned again
    from the table's markers, which never cover them, so their records are applied again.
    """

    def __init__(self) -> None:
        self._live: dict[str, SessionState] = {}
        self._ended: set[str] = set()  # keys known to hold tombstones: the timer skips them unread
        self._unwritten: dict[str, tuple[SessionState, EventT]] = {}  # sid -> (state, its last event)

    def clear(self) -> int:
        """Forget everything; the number of unwritten states dropped."""
        dropped = len(self._unwritten)
        self._live.clear()
        self._ended.clear()
        self._unwritten.clear()
        return dropped

    def stage(self, state: SessionState, event: EventT) -> None:
        """A state applied by a finished batch, to be written with ``event``'s partition (its last record)."""
        self._unwritten[state.session_id] = (state, event)
        self.put(state)

    def take_unwritten(self) -> dict[str, tuple[SessionState, EventT]]:
        """The staged states, now to be written (no longer held as unwritten)."""
        taken, self._unwritten = self._unwritten, {}
        return taken

    def restage(self, taken: dict[str, tuple[SessionState, EventT]]) -> None:
        """States taken for a write that failed: unwritten again, unless a later batch staged newer ones."""
        for sid, entry in taken.items():
            self._unwritten.setdefault(sid, entry)

    def has_unwritten(self) -> bool:
        return bool(self._unwritten)

    def put(self, state: SessionState) -> None:
        if state.ended:
            self._live.pop(state.session_id, None)
            self._ended.add(state.session_id)
        else:
            self._live[state.session_id] = state
            self._ended.discard(state.session_id)  # an expired id used again is a new session

    def get(self, sid: str, read: Callable[[str], dict | None]) -> SessionState | None:
        unwritten = self._unwritten.get(sid)
        if unwritten is not None:
            return unwritten[0]
        state = self._live.get(sid)
        if state is None:
            raw = read(sid)
            if not raw:
                return None
            state = SessionState.from_json(session_fields(raw))
            self.put(state)
        return state

    def live(self, keys, read: Callable[[str], dict | None]) -> dict[str, SessionState]:
        """Every live session among ``keys`` (the table's keys) and the unwritten states: cached, or
        read once and cached."""
        out = {}
        for k in itertools.chain(keys, list(self._unwritten)):
            if not isinstance(k, str) or k in self._ended or k in out:  # progress markers are not sessions
                continue
            state = self.get(k, read)
            if state is not None and not state.ended:
                out[k] = state
        return out


class SourceGate:
    """Applies each source partition in offset order from the position the table state records.

    Each finished batch stages its session states (``DecodedStates.stage``) and confirms its
    positions (``confirm``). ``write`` stores them before every offset commit and when partitions are
    revoked: the staged states, then the next offset of every partition (``marker_key``) to the same
    changelog partition, so the recovered marker never runs ahead of the recovered sessions and the
    committed offset never runs ahead of the marker. Redeliveries below it are skipped; a record above
    it (a hole) is held and its partition read again (``stream/progress.py``).
    """

    def __init__(self, topic: str, table: SessionTable, settings: Settings, clock,
                 decoded: DecodedStates | None = None):
        self.topic, self.table, self.clock = topic, table, clock
        self.decoded = decoded or DecodedStates()
        self.progress = SourceProgress(settings.source_gap_timeout_s, settings.source_rewind_interval_s)
        self.grace_s = settings.retired_session_grace_s
        self._recorded: dict[int, int] = {}
        self._last_event: dict[int, EventT] = {}  # partition -> its latest applied record (a write's partition)
        self.expiry_due: dict[int, list[str]] = {}
        self._writing = asyncio.Lock()  # one write at a time: each marker follows the states it covers

    def forget(self, partitions) -> None:
        partitions = list(partitions)
        self.progress.forget(partitions)
        for p in partitions:
            self._recorded.pop(p, None)
            self._last_event.pop(p, None)
            self.expiry_due.pop(p, None)

    def recorded(self, partition: int) -> int | None:
        return marker_next_offset(self.table.get(marker_key(self.topic, partition)))

    async def position(self, consumer, tps) -> None:
        """Seek each source partition to where the recovered state needs it (tables are recovered)."""
        tps = sorted(tps)
        if not tps:
            return
        # The tables are recovered now: anything decoded while recovery was writing them is stale.
        self.clear_decoded()
        log_start = await consumer.earliest_offsets(*tps)
        for tp in tps:
            marker = self.recorded(tp.partition)
            committed = consumer._read_offset.get(tp)  # faust's seek to the committed offset just set it
            pos = plan_position(marker, committed, log_start.get(tp))
            if pos.read_from is not None:
                await consumer.seek_wait({tp: pos.read_from})
            self.progress.reset(tp.partition, pos.next_offset)
            if marker is not None:
                self._recorded[tp.partition] = marker
            log.info("source %s[%d]: state at %s, committed %s: reading from %s", self.topic, tp.partition,
                     marker, committed, pos.read_from)
            if pos.lost:
                metrics.SOURCE_GAP_RECORDS.inc(pos.lost)
                log.error("source %s[%d]: %d record(s) after the stored state are no longer on the broker",
                          self.topic, tp.partition, pos.lost)

    def admit(self, events) -> list:
        """The events to apply, in order; redeliveries are skipped, records after a hole held."""
        now = time.monotonic()
        self.progress.begin()  # confirmed by commit_progress once the batch's state is stored
        out = []
        for e in events:
            verdict = self.progress.admit(e.message.partition, e.message.offset, now)
            if verdict == "applied":
                metrics.UTTERANCES.labels(result="replayed").inc()
                continue
            if verdict == "held":
                continue
            if verdict == "gap":
                p, first, present = self.progress.gaps.pop()
                metrics.SOURCE_GAP_RECORDS.inc(present - first)
                log.error("source %s[%d]: offsets %d..%d never arrived after %.0f s; continuing at %d",
                          self.topic, p, first, present - 1, self.progress.gap_timeout_s, present)
            out.append(e)
        return out

    def confirm(self, events) -> None:
        """The batch's outputs are on the broker and its states staged: its positions count. No await
        between staging and this, so a concurrent ``write`` sees both or neither."""
        for e in events:
            self._last_event[e.message.partition] = e
        self.progress.confirm()

    def clear_decoded(self) -> None:
        dropped = self.decoded.clear()
        if dropped:
            log.warning("%d applied session state(s) were not written before the table changed; their "
                        "records are read again from the stored positions", dropped)

    async def write(self) -> None:
        """Store what the finished batches applied: the staged session states and due tombstone
        deletions, then each partition's next offset, each on the broker before the next step (and,
        called from the consumer's commit, before the offsets are committed). A marker goes in a
        produce request of its own, after everything else written to its partition, so it is the last
        record there: a recovered marker is never ahead of the recovered sessions, and the changelog
        never ends in a multi-record batch (tansu's ListOffsets understates the end of one, and
        faust's recovery trusts that end)."""
        async with self._writing:
            # A snapshot taken without awaiting: batches that finish while this write waits for the
            # broker are staged and confirmed after it, and go with the next write.
            states = self.decoded.take_unwritten()
            positions = {p: self.progress.next_offset(p) for p in self._last_event}
            last_event = dict(self._last_event)
            now = self.clock()
            try:
                for sid, (state, event) in states.items():
                    # Each write goes to the changelog partition of the event it names (the session's last
                    # record): take_events does not set a current event per record.
                    with _writing_for(event):
                        self.table[sid] = table_value(state, event.message.partition, now)
                for p, e in last_event.items():
                    if self.expiry_due.get(p):
                        with _writing_for(e):
                            self._expire(self.expiry_due.pop(p))
                written = await self.table.changelog_written()
                for p, nxt in sorted(positions.items()):
                    if nxt is not None and (self._recorded.get(p) != nxt or p in written):
                        with _writing_for(last_event[p]):
                            self.table[marker_key(self.topic, p)] = marker_value(nxt)
                        self._recorded[p] = nxt
                await self.table.changelog_written()
            except BaseException:
                # Not stored (or not known to be): the next write writes them again, and no marker
                # covers them before that. The error goes on to the caller (a failed commit is loud).
                self.decoded.restage(states)
                raise

    def _expire(self, session_ids) -> None:
        for sid in session_ids:
            # Deleted only if still a tombstone past its grace (checked again: the scan was earlier).
            if is_expired(self.table.get(sid), self.clock(), self.grace_s):
                del self.table[sid]
                metrics.SESSIONS_EXPIRED.inc()

    async def rewind(self, app) -> None:
        """Seek partitions with a hole back to their next offset (again every rewind interval)."""
        for p, offset in self.progress.rewinds_due(time.monotonic()).items():
            consumer = app.consumer
            tp = consumer._new_topicpartition(self.topic, p)
            if tp not in consumer.assignment():
                continue
            metrics.SOURCE_REWINDS.inc()
            log.warning("source %s[%d]: record %d was not delivered; reading again from it", self.topic, p, offset)
            await consumer.seek_wait({tp: offset})


@contextlib.contextmanager
def _writing_for(event):
    """Table writes inside go to ``event``'s partition (faust reads it from the current event)."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


def table_value(state: SessionState, partition: int, now: float) -> dict:
    """The table value of a session: its state, and for a retired one when and where it retired."""
    value = state.to_json()
    return with_retirement(value, now, partition) if state.ended else value


def broker_credentials(settings: Settings) -> faust.types.auth.CredentialsT | None:
    """Faust's credentials for the configured protocol: TLS for SSL and SASL_SSL, SASL for SASL_*."""
    ssl_context = settings.kafka_ssl_context()
    if settings.kafka_security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None,
            mechanism=settings.kafka_sasl_mechanism, ssl_context=ssl_context)
    if ssl_context is not None:
        return faust.SSLCredentials(ssl_context)
    return None


def create_app(settings: Settings, classifier: Classifier | None = None,
               clock=time.time, serve_metrics: bool = True,
               stop_worker: Callable[[faust.App, str], None] | None = None,
               health_clock: Callable[[], float] = time.monotonic) -> faust.App:
    """The worker app. ``serve_metrics`` serves /metrics, /healthz and /readyz when the worker starts;
    ``stop_worker(app, reason)`` ends the process after a fatal error (default: ``stop_faust_worker``)."""
    t = settings.topics
    app = MonitorApp(
        settings.app_id, fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms, broker=[f"kafka://{b}" for b in settings.kafka_bootstrap.split(",")],
        broker_credentials=broker_credentials(settings), value_serializer="raw",
        topic_partitions=settings.topic_partitions, **table_options(settings),
        broker_session_timeout=settings.broker_session_timeout_s, broker_commit_interval=settings.commit_interval_s,
        processing_guarantee="at_least_once", web_enabled=False,
        producer_acks=-1, producer_linger=settings.producer_linger_s,
        broker_max_poll_records=settings.consumer_max_poll_records, topic_disable_leader=True,
        datadir=str(settings.run_dir / f"faust-{settings.worker_id}"))
    classifier = classifier or TritonClassifier(settings)
    utterances = app.topic(t.utterances, key_type=bytes, value_type=bytes,
                           partitions=settings.topic_partitions)
    events = app.topic(t.homework_events, partitions=settings.topic_partitions)
    summaries = app.topic(t.session_summaries, partitions=settings.topic_partitions)
    nudges = app.topic(t.nudges, partitions=settings.topic_partitions)
    opened = app.topic(t.session_opened, partitions=settings.topic_partitions)
    dead_letter = app.topic(t.dead_letter, partitions=1)
    sessions = cast(SessionTable, app.Table("sessions", default=None, partitions=settings.topic_partitions,
                                            options=settings.table_store_options() or None))
    # Cross-session follow-up (docs/NUDGES.md). The utterances are partitioned by session, so a table keyed
    # by client is not co-partitioned with them: a session's worker may own none of its client's table
    # partition. So every worker holds the whole history (a GlobalTable, read locally at session start),
    # and it is written by one agent from a one-partition topic of the summaries keyed by client: one
    # writer per client, in summary order, and the table's changelog partition is the event's partition.
    summaries_by_client = app.topic(f"{settings.app_id}-summaries-by-client", partitions=1, internal=True,
                                    key_type=bytes, value_type=bytes)
    client_history = cast(ClientHistoryTable, app.GlobalTable(
        "client_history", default=None, partitions=1,
        # every worker keeps reading all of the changelog after recovery (faust-streaming issue #283),
        # and applies it record by record (the workaround faust's GlobalTable documents)
        synchronize_all_active_partitions=True, recovery_buffer_size=1,
        options=settings.table_store_options() or None))
    nudge_cfg = NudgeConfig.from_settings(settings)
    decoded = DecodedStates()
    gate = SourceGate(t.utterances, sessions, settings, clock, decoded)
    silence_sent: dict[str, float] = {}
    nudge_check_sent: dict[str, float] = {}
    app.classifier = classifier  # type: ignore[attr-defined]
    app.sessions_table = sessions  # type: ignore[attr-defined]
    app.client_history_table = client_history  # type: ignore[attr-defined]
    health = HealthState(stall_timeout_s=settings.stall_timeout_s, stall_exit_s=settings.stall_exit_s,
                         broker_unreachable_exit_s=settings.broker_unreachable_exit_s)
    app.health = health  # type: ignore[attr-defined]

    async def fail(reason: str) -> None:
        """Fatal: commits blocked and /healthz failing now; the worker stops fatal_exit_delay_s later."""
        if not health.fail(reason):
            return  # already on its way out
        metrics.FATAL.labels(reason=reason).inc()
        log.critical("FATAL (%s): no further offsets are committed; stopping the worker in %.0fs with exit "
                     "code 1", reason, settings.fatal_exit_delay_s)
        stop = stop_worker or functools.partial(stop_faust_worker, timeout_s=settings.fatal_exit_timeout_s)
        asyncio.get_running_loop().call_later(settings.fatal_exit_delay_s, stop, app, reason)
    app.source_gate = gate  # type: ignore[attr-defined]

    def read_session(sid: str) -> dict | None:
        # No current event: the RocksDB store then finds the key in whichever partition holds it
        # (with one set, it looks only in that event's partition, which may be another session's).
        _current_event.set(None)
        return sessions.get(sid)

    def load_state(sid: str) -> SessionState | None:
        return decoded.get(sid, read_session)

    def load_history(client_id: str) -> ClientHistory | None:
        return history_of(client_history.get(client_id))

    @app.agent(utterances)
    async def monitor(stream):
        async def handle_batch(received):
            batch = gate.admit(received)  # in offset order from the stored position; redeliveries skipped
            started = clock()
            for e in batch:
                if e.message.timestamp:
                    metrics.INBOUND_LAG.observe(max(0.0, started - e.message.timestamp))
            records = [InboundRecord(e.value, e.key.decode("utf-8", "replace") if e.key else None,
                                     e.message.partition, e.message.offset) for e in batch]
            result = await process_batch(records, load_state, classifier, settings, clock,
                                         source_topic=t.utterances, load_history=load_history)
            # Outputs first, state second: a crash in between replays the batch from the old state and
            # re-emits the same ids, never loses an event.
            sends = [await dead_letter.send(key=(d.key or "").encode(), value=_dump(d))
                     for d in result.dead_letters]
            sends += [await opened.send(key=o.session_id.encode(), value=_dump(o)) for o in result.opened]
            sends += [await events.send(key=e.session_id.encode(), value=_dump(e)) for e in result.events]
            sends += [await nudges.send(key=n.session_id.encode(), value=_dump(n)) for n in result.nudges]
            sends += [await summaries.send(key=s.session_id.encode(), value=_dump(s)) for s in result.summaries]
            sends += [await summaries_by_client.send(key=s.client_id.encode(), value=_dump(s))
                      for s in result.summaries if s.client_id is not None]
            for fut in sends:
                await fut
            # The states go to the table with the next offset commit (SourceGate.write): a session
            # with several utterances between two commits is written once.
            for sid, state in result.states.items():
                decoded.stage(state, batch[result.last_record_of[sid]])
            gate.confirm(received)
            await gate.rewind(app)
            _observe(result)
            if result.dead_letters:
                log.warning("dead-lettered %d message(s): %s", len(result.dead_letters),
                            dict(Counter(d.reason for d in result.dead_letters)))

        await consume_batches(stream.take_events(settings.batch_size, within=settings.batch_within_s),
                              handle_batch, health, fail, health_clock)

    @app.agent(summaries_by_client)
    async def record_client_history(stream):
        """Each summary becomes its client's latest session (idempotent: a redelivery replaces its entry)."""
        async for event in stream.events():
            try:
                summary = SessionSummary.model_validate_json(event.value)
            except ValueError as exc:  # only this app writes the topic: a bug, reported without the record
                log.error("client history: unreadable summary at offset %s skipped (%s)", event.message.offset,
                          type(exc).__name__)
                continue
            if summary.client_id is None:
                continue
            updated = record_session(history_of(client_history.get(summary.client_id)), summary)
            client_history[summary.client_id] = updated.model_dump(mode="json")
            await client_history.changelog_written()  # stored before this offset can be committed
            metrics.CLIENT_HISTORY_UPDATES.inc()

    @app.timer(interval=settings.silence_check_interval_s)
    async def silence_timer():
        now = clock()
        states = decoded.live(list(sessions.keys()), read_session)
        metrics.ACTIVE_SESSIONS.set(len(states))
        for sid in [k for k in silence_sent if k not in states]:
            del silence_sent[sid]
        for sid in [k for k in nudge_check_sent if k not in states]:
            del nudge_check_sent[sid]
        due = silence_checks_due(states, now, settings.silence_flush_s, silence_sent)
        for sid in due:
            silence_sent[sid] = states[sid].last_activity_at
        # A nudge that falls due between utterances ("no homework yet" at minute 40 of a quiet stretch):
        # the same check, processed in the session's partition order, fires it (stream/nudges.py).
        for sid in nudge_checks_due(states, now, nudge_cfg, nudge_check_sent, NUDGE_CHECK_RESEND_S):
            nudge_check_sent[sid] = now
            if sid not in due:
                due.append(sid)
        for sid in due:
            await utterances.send(key=sid.encode(), value=_dump(SilenceCheck(session_id=sid, at=now)))
            metrics.CHECKS_SENT.inc()

    @app.timer(interval=settings.source_rewind_interval_s)
    async def source_rewinds():
        # A hole's partition may get no further records to trigger a rewind from the agent.
        await gate.rewind(app)

    @app.timer(interval=settings.retired_session_check_interval_s)
    async def retired_session_expiry():
        # Deleted by the agent with the partition's next batch (a table write needs that partition).
        gate.expiry_due = expired_by_partition(list(sessions.items()), clock(), settings.retired_session_grace_s)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # faust's signal typing
    async def on_assigned(app, assigned, **kwargs):  # noqa: ARG001 - faust signal signature
        gate.clear_decoded()  # recovery rewrites the table under the cache
        mine = sorted(tp.partition for tp in assigned if tp.topic == t.utterances)
        log.info("partitions assigned: %s %s", t.utterances, mine)

    @app.task
    async def on_start():
        log.info("event loop: %s", type(asyncio.get_running_loop()).__module__)
        try:
            await classifier.start()
        except (ClassifierUnavailable, ContractMismatch) as exc:  # our messages: configuration, no text
            log.critical("classifier unavailable: %s", exc)
            await fail("classifier_unavailable")
            return
        except Exception as exc:  # noqa: BLE001 - type only: a server's message is not ours to log
            log.critical("classifier unavailable (%s)", type(exc).__name__)
            await fail("classifier_unavailable")
            return
        log.info("classifier ready: %s", classifier.model_version)

    async def start_health() -> None:
        health.heartbeat(health_clock())
        if serve_metrics:
            probes.serve_probes(settings.metrics_host, settings.metrics_port, health, health_clock)
        app.add_future(probes.heartbeat(health, health_clock))
        app.add_future(probes.watch(
            health, probes.BrokerProbe(settings), topic=t.utterances, assignment=app.consumer.assignment,
            fetch_highwater=app.consumer.highwater, classifier_ready=lambda: classifier_ready(classifier),
            interval_s=settings.health_check_interval_s, clock=health_clock, fail=fail))
    app.on_first_start_hook = start_health

    app.monitor_agent = monitor  # type: ignore[attr-defined]
    app.client_history_agent = record_client_history  # type: ignore[attr-defined]
    return app


async def consume_batches(batches, handle_batch: Callable[[list], Awaitable[None]], health: HealthState,
                          fail: Callable[[str], Awaitable[None]], clock: Callable[[], float]) -> None:
    """Run ``handle_batch`` on each batch that ``take_events`` yields.

    Faust acks a batch's events when the loop asks for the next batch -- and also when the body
    raised, since take_events acks in a ``finally``. So a batch that fails is never let go: commits
    are blocked, the worker fails, and this loop waits here until the worker stops it. The failure is
    logged by exception type and frames only: exception messages may quote transcript text.
    """
    health.agent_running(True, clock())
    try:
        async for batch in batches:
            try:
                await handle_batch(batch)
            except asyncio.CancelledError:
                # Stopped half-way through a batch (faust normally waits for the batch first).
                health.block_commits("batch_interrupted")
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of the batch machinery
                health.block_commits("batch_failed")
                frames = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)[-6:]))
                log.critical("batch of %d message(s) failed with %s, not committed; partitions %s\n%s",
                             len(batch), type(exc).__name__,
                             sorted({f"{tp[0]}-{tp[1]}" for tp in last_offsets(batch)}), frames.rstrip())
                await fail("batch_failed")
                await asyncio.Event().wait()  # until the worker stops (cancels) the agent
            else:
                health.processed(last_offsets(batch), clock())
    finally:
        health.agent_running(False, clock())


def last_offsets(batch) -> dict[tuple[str, int], int]:
    """The last offset of each source partition in a batch of faust events."""
    out: dict[tuple[str, int], int] = {}
    for e in batch:
        tp = (e.message.topic, e.message.partition)
        out[tp] = max(out.get(tp, -1), e.message.offset)
    return out


async def classifier_ready(classifier: Classifier) -> bool:
    """The classifier's own readiness check where it has one (Triton: the model is ready)."""
    is_ready = getattr(classifier, "is_ready", None)
    return bool(await is_ready()) if is_ready is not None else True


class WorkerFailed(RuntimeError):
    """What the stopped worker raises after a fatal error, making its exit code 1. Its message is a
    reason from ``stream.health.FATAL_REASONS``, never data."""


def stop_faust_worker(app: faust.App, reason: str, timeout_s: float = 30.0) -> None:
    """Stop the Faust worker as an orchestrator's SIGTERM would -- leave the group, flush, close --
    but with exit code 1; end the process outright if that stop takes over ``timeout_s``."""
    watchdog = threading.Timer(timeout_s, _exit_now, args=(reason, f"the stop took over {timeout_s:.0f}s"))
    watchdog.daemon = True
    watchdog.start()
    # The failed batch's events will never be acked: do not wait for them on the way out (faust reads
    # the setting when it stops; it warns about a late change, which is the point here).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AlreadyConfiguredWarning)
        app.conf.stream_wait_empty = False
    root = app.beacon.root.data if app.beacon.root is not None else None
    if not isinstance(root, ModeWorker):
        _exit_now(reason, "no faust worker to stop")
        return
    root.crash_reason = WorkerFailed(reason)  # mode re-raises it once stopped: exit code 1
    os.kill(os.getpid(), signal.SIGTERM)


def _exit_now(reason: str, why: str) -> None:
    log.critical("exiting now with code 1 (%s): %s", reason, why)
    logging.shutdown()
    os._exit(1)


def table_options(settings: Settings) -> dict:
    """Faust table settings: the store (RocksDB on disk under the run dir, or memory), standbys, and
    the table class whose changelog writes the agent can wait for."""
    return {"store": "rocksdb://" if settings.table_store == "rocksdb" else "memory://",
            "table_standby_replicas": settings.table_standby_replicas, "Table": SessionTable,
            "GlobalTable": ClientHistoryTable}


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
        for r in s.reviews:
            metrics.REVIEWS.labels(source=r.source).inc()
    for n in result.nudges:
        metrics.NUDGES.labels(rule=n.rule).inc()
    metrics.SESSIONS_OPENED.inc(len(result.opened))
    metrics.SESSIONS_WITHOUT_CONSENT.inc(len(result.declined))
    for lat in result.latencies:
        metrics.LATENCY.observe(lat)


def use_event_loop(settings: Settings) -> None:
    """The worker's event loop (``HWM_EVENT_LOOP``), chosen through mode's own hook before anything
    creates a loop (faust's consumer thread creates its own from the same policy). The ``faust -A``
    path chooses with its ``--loop`` option instead."""
    if settings.event_loop == "uvloop":
        import mode.loop
        mode.loop.use("uvloop")


def run_worker(settings: Settings) -> None:
    """Entry point of ``homework-monitor worker``: the Faust worker (metrics on its own port, no web UI)."""
    use_event_loop(settings)
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    worker_app = create_app(settings)
    from faust import Worker
    worker = Worker(worker_app, loglevel=settings.log_level, quiet=True)
    log.info("worker %s: broker %s, triton %s, probes %s:%d", settings.worker_id,
             settings.kafka_bootstrap, settings.triton_url, settings.metrics_host, settings.metrics_port)
    worker.execute_from_commandline()


# The module-level app, as Faust users expect: ``faust -A homework_monitor.stream.app worker -l info``
# runs the same worker as ``homework-monitor worker`` (settings from HWM_* variables).
# That path does not pass through homework_monitor.cli, which installs the log guard: install it here too.
logsafe.install()
app = create_app(Settings())
