"""What the worker's probes answer, decided from what the worker and its broker probe observed.

Pure: no I/O, and every call takes an explicit ``now`` (monotonic seconds), so each rule is tested
with a fake clock. The event loop writes observations; the probe server's thread reads verdicts; a
lock keeps the two consistent.

Per partition assigned to this worker:

- *position*: the next offset to process -- past the last record this worker processed, or the
  group's committed offset, whichever is further (0 when the group has none: the worker reads from
  the earliest offset).
- *end*: a lower bound of the log end -- the highwater of the consumer's last fetch or of a
  ListOffsets request, whichever is larger (tansu answers ListOffsets with the last batch's base
  offset + 1, so the fetch highwater is the better one there; Apache Kafka gives both exactly).
- *lag* = end - position. A partition *waits* from the later of "lag appeared" and "position last
  advanced". Waiting ``stall_timeout_s`` makes it *stalled* (not ready); ``stall_exit_s`` makes the
  worker exit so the orchestrator restarts it.
- The broker *lost data* when a partition's committed offset vanishes or goes back, or its end goes
  back, compared with the most this process has seen (across reassignments: the group commits only
  forward, whichever worker owns the partition). Kafka never does either; a broker that restarted
  without its storage does (tansu is memory-only). The worker exits at once: its state no longer
  matches the log.

Reasons are closed vocabularies (they become metric labels and probe bodies).
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

TP = tuple[str, int]

# Why the worker stops itself (exit code 1).
FATAL_REASONS = ("batch_failed", "classifier_unavailable", "stalled", "broker_data_lost",
                 "broker_unreachable")
# Why /healthz or /readyz fails.
PROBE_REASONS = ("fatal", "loop_blocked", "agent_down", "starting", "no_partitions",
                 "broker_unreachable", "triton_unavailable", "stalled")


def _tp(tp) -> TP:
    """faust's TP and aiokafka's TopicPartition are both (topic, partition) named tuples."""
    return (str(tp[0]), int(tp[1]))


@dataclass
class PartitionWatch:
    watched_since: float
    processed: int | None = None  # last offset this worker processed
    committed: int | None = None  # the group's committed offset (the next one to read)
    fetch_end: int | None = None
    listed_end: int | None = None
    last_position: int = 0
    waiting_since: float | None = None

    @property
    def position(self) -> int:
        done = self.processed + 1 if self.processed is not None else 0
        return max(done, self.committed or 0)

    @property
    def end(self) -> int | None:
        ends = [e for e in (self.fetch_end, self.listed_end) if e is not None]
        return max(ends) if ends else None

    @property
    def lag(self) -> int | None:
        end = self.end
        return None if end is None else max(0, end - self.position)

    def update(self, now: float) -> None:
        """Restart the wait on progress; start it when lag appears; clear it when lag is gone."""
        position = self.position
        progressed = position > self.last_position
        self.last_position = max(self.last_position, position)
        if not self.lag:
            self.waiting_since = None
        elif progressed or self.waiting_since is None:
            self.waiting_since = now


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reasons: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"status": "ok" if self.ok else "fail", "reasons": list(self.reasons)}


@dataclass(frozen=True)
class Evaluation:
    """One periodic look: what to export and whether to stop."""
    lags: dict[TP, int]
    newly_stalled: tuple[TP, ...]
    exit_reason: str | None


@dataclass
class HealthState:
    stall_timeout_s: float
    stall_exit_s: float
    broker_unreachable_exit_s: float
    partitions: dict[TP, PartitionWatch] = field(default_factory=dict)
    # The most seen per partition, kept across reassignments: committed, ListOffsets end, fetch end.
    seen: dict[TP, tuple[int | None, int | None, int | None]] = field(default_factory=dict)
    heartbeat_at: float | None = None
    agent_started: bool = False
    agent_down_since: float | None = None
    broker_ok_at: float | None = None
    broker_failing_since: float | None = None
    triton_ready: bool | None = None
    fatal: str | None = None
    commits_blocked: str | None = None
    _stalled: set[TP] = field(default_factory=set)
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    # ------------------------------------------------------------------ observations (event loop)
    def heartbeat(self, now: float) -> None:
        with self._lock:
            self.heartbeat_at = now

    def agent_running(self, running: bool, now: float) -> None:
        with self._lock:
            if running:
                self.agent_started, self.agent_down_since = True, None
            elif self.agent_down_since is None:
                self.agent_down_since = now

    def assigned(self, tps: Iterable, now: float) -> None:
        """The partitions of the source topic this worker owns now; others are forgotten."""
        with self._lock:
            current = {_tp(tp) for tp in tps}
            for tp in set(self.partitions) - current:
                del self.partitions[tp]
                self._stalled.discard(tp)
            for tp in current - set(self.partitions):
                self.partitions[tp] = PartitionWatch(watched_since=now)

    def processed(self, offsets: Mapping, now: float) -> None:
        """The agent finished a batch: ``offsets`` maps each partition to its last offset in it."""
        with self._lock:
            for tp, offset in offsets.items():
                w = self.partitions.get(_tp(tp))
                if w is None:
                    continue  # revoked meanwhile
                w.processed = offset if w.processed is None else max(w.processed, offset)
                w.update(now)

    def broker_observed(self, now: float, committed: Mapping, listed_end: Mapping,
                        fetch_end: Mapping) -> list[TP]:
        """A successful broker probe. Returns the partitions whose data the broker lost."""
        with self._lock:
            self.broker_ok_at, self.broker_failing_since = now, None
            lost = []
            for tp, w in self.partitions.items():
                c = _offset(committed.get(tp))
                le, fe = _offset(listed_end.get(tp)), _offset(fetch_end.get(tp))
                seen_c, seen_le, seen_fe = self.seen.get(tp, (None, None, None))
                if (seen_c is not None and (c is None or c < seen_c)) or _went_back(le, seen_le) or \
                        _went_back(fe, seen_fe):
                    lost.append(tp)
                self.seen[tp] = (_most(c, seen_c), _most(le, seen_le), _most(fe, seen_fe))
                w.committed = c
                w.listed_end = le if le is not None else w.listed_end
                w.fetch_end = fe if fe is not None else w.fetch_end
                w.update(now)
            return lost

    def broker_failed(self, now: float) -> None:
        with self._lock:
            if self.broker_failing_since is None:
                self.broker_failing_since = now

    def triton_observed(self, ready: bool) -> None:
        with self._lock:
            self.triton_ready = ready

    def fail(self, reason: str) -> bool:
        """Mark the worker fatally failed (the first reason wins); True if it was not already."""
        if reason not in FATAL_REASONS:
            raise ValueError(f"unknown fatal reason {reason!r}")
        with self._lock:
            self.block_commits(reason)
            if self.fatal is not None:
                return False
            self.fatal = reason
            return True

    def block_commits(self, reason: str) -> None:
        """From now on this process commits no offset (a batch it could not finish is on the line)."""
        with self._lock:
            self.commits_blocked = self.commits_blocked or reason

    # ------------------------------------------------------------------------ verdicts (any thread)
    def waited(self, now: float) -> dict[TP, float]:
        """Seconds each partition with lag has gone without progress."""
        with self._lock:
            return {tp: now - w.waiting_since for tp, w in self.partitions.items()
                    if w.waiting_since is not None}

    def liveness(self, now: float) -> Verdict:
        with self._lock:
            reasons = []
            if self.fatal:
                reasons.append("fatal")
            if self.heartbeat_at is not None and now - self.heartbeat_at > self.stall_timeout_s:
                reasons.append("loop_blocked")
            if self.agent_down_since is not None and now - self.agent_down_since > self.stall_timeout_s:
                reasons.append("agent_down")
            return Verdict(not reasons, tuple(reasons))

    def readiness(self, now: float) -> Verdict:
        with self._lock:
            reasons = list(self.liveness(now).reasons)
            if not self.agent_started:
                reasons.append("starting")
            elif self.agent_down_since is not None and "agent_down" not in reasons:
                reasons.append("agent_down")
            if not self.partitions:
                reasons.append("no_partitions")
            if self.broker_ok_at is None or self.broker_failing_since is not None:
                reasons.append("broker_unreachable")
            if not self.triton_ready:
                reasons.append("triton_unavailable")
            if any(t >= self.stall_timeout_s for t in self.waited(now).values()):
                reasons.append("stalled")
            return Verdict(not reasons, tuple(reasons))

    def evaluate(self, now: float) -> Evaluation:
        """Called once per check: lags to export, partitions that just stalled, and whether to exit."""
        with self._lock:
            waited = self.waited(now)
            stalled = {tp for tp, t in waited.items() if t >= self.stall_timeout_s}
            newly = tuple(sorted(stalled - self._stalled))
            self._stalled = stalled
            exit_reason = None
            if any(t >= self.stall_exit_s for t in waited.values()):
                exit_reason = "stalled"
            elif self.broker_failing_since is not None and \
                    now - self.broker_failing_since >= self.broker_unreachable_exit_s:
                exit_reason = "broker_unreachable"
            lags = {tp: w.lag for tp, w in self.partitions.items() if w.lag is not None}
            return Evaluation(lags, newly, exit_reason)


def _went_back(value: int | None, most: int | None) -> bool:
    return value is not None and most is not None and value < most


def _most(value: int | None, most: int | None) -> int | None:
    return most if value is None else value if most is None else max(value, most)


def _offset(value) -> int | None:
    """Kafka spells "no offset" as None or -1; aiokafka's OffsetAndMetadata carries it in .offset."""
    value = getattr(value, "offset", value)
    return None if value is None or value < 0 else int(value)
