"""Where each source partition stands: the next offset the stored state needs. Pure, no I/O.

The sessions table keeps, next to the session states of each ``utterances`` partition, a marker with
the next offset of that partition to apply (written after the states it covers, to the same changelog
partition, before each offset commit). After a restart the marker, not the group's committed offset, says where to read from:
the committed offset can be ahead of the state (faust commits offsets it never delivered, see
docs/RESTARTS.md) or behind it (commits lag). While running, :class:`SourceProgress` admits each
record exactly in offset order from there: below the marker is already applied, above it is a hole
(records the client skipped) that is read again before anything after it is applied.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

#: Table key of a partition's marker: a list/tuple key can never equal a session id (a string).
MARKER_KIND = "source-offset"

Admission = Literal["apply", "applied", "held", "gap"]


def marker_key(topic: str, partition: int) -> tuple[str, str, int]:
    return (MARKER_KIND, topic, partition)


def is_marker_key(key) -> bool:
    return isinstance(key, (list, tuple)) and len(key) == 3 and key[0] == MARKER_KIND


def marker_value(next_offset: int) -> dict:
    return {"next_offset": next_offset}


def marker_next_offset(value) -> int | None:
    return int(value["next_offset"]) if isinstance(value, dict) and "next_offset" in value else None


@dataclass(frozen=True)
class Position:
    """Where to resume a partition: read from ``read_from``; offsets below ``next_offset`` are applied
    already; ``lost`` records between the state and the oldest retained record are gone for good."""
    read_from: int | None
    next_offset: int | None
    lost: int = 0


def plan_position(marker: int | None, committed: int | None, log_start: int | None) -> Position:
    """Resume point of one partition from the state's marker, the group's committed offset and the
    oldest offset the broker still holds (``None``: unknown).

    The marker is the truth when there is one; reading starts at the lower of marker and committed
    offset, so a state ahead of the commit re-reads (and skips) a little instead of seeking past what
    the commit bookkeeping expects. Without a marker nothing of this partition was ever applied by a
    marker-writing worker, so the committed offset (or the log start) is the state's position.
    """
    if marker is None:
        start = committed if committed is not None else log_start
        return Position(start, start)
    read_from = marker if committed is None else min(marker, committed)
    if log_start is not None and marker < log_start:  # retention deleted records the state never saw
        return Position(log_start, log_start, lost=log_start - marker)
    return Position(read_from, marker)


@dataclass
class _Partition:
    next_offset: int | None
    hole_since: float | None = None
    last_rewind_at: float | None = None


class SourceProgress:
    """Admission of source records in offset order, per partition (one worker's view).

    ``admit`` answers, for each record in arrival order: ``apply`` (it is the next one), ``applied``
    (below the position: a redelivery), ``held`` (above the position: records in between were not
    delivered; nothing after a hole is applied until it is read again), or ``gap`` (a hole that did not
    fill within ``gap_timeout_s``: the log has no records there, the record is applied and the hole is
    reported). ``rewinds_due`` lists the partitions to seek back to their position, at most every
    ``rewind_interval_s`` while a hole lasts.

    A micro-batch is admitted between ``begin`` and ``confirm``: its advances count only once the
    batch's outputs are on the broker and its states are staged for the table (a stored marker then
    records no more than the confirmed positions). A batch that fails never confirms, and the next
    ``begin`` starts again from the confirmed positions, so its records are applied when they come
    again.
    """

    def __init__(self, gap_timeout_s: float, rewind_interval_s: float):
        self.gap_timeout_s = gap_timeout_s
        self.rewind_interval_s = rewind_interval_s
        self._parts: dict[int, _Partition] = {}  # confirmed
        self._batch: dict[int, _Partition] | None = None  # the batch being applied
        self._dropped: set[int] = set()  # forgotten while a batch was being applied
        self.gaps: list[tuple[int, int, int]] = []  # (partition, first missing offset, next present offset)

    def _current(self) -> dict[int, _Partition]:
        return self._batch if self._batch is not None else self._parts

    def begin(self) -> None:
        self._batch = {p: replace(st) for p, st in self._parts.items()}

    def confirm(self) -> None:
        if self._batch is not None:
            self._parts, self._batch = self._batch, None
            for p in self._dropped:
                self._parts.pop(p, None)
        self._dropped.clear()

    def reset(self, partition: int, next_offset: int | None) -> None:
        """The partition was (re)positioned: ``next_offset`` is the next record to apply."""
        for parts in (self._parts, self._batch):
            if parts is not None:
                parts[partition] = _Partition(next_offset)
        self._dropped.discard(partition)

    def forget(self, partitions) -> None:
        """The partitions went to another worker. A batch being applied keeps its view of them until
        it confirms, and they are dropped then."""
        for p in partitions:
            self._parts.pop(p, None)
            if self._batch is not None:
                self._dropped.add(p)

    def next_offset(self, partition: int) -> int | None:
        """The next offset to apply as of the last confirmed batch: what a stored marker may say (a
        batch being applied does not count before it confirms)."""
        st = self._parts.get(partition)
        return st.next_offset if st else None

    def holes(self) -> dict[int, int]:
        return {p: st.next_offset for p, st in self._parts.items()
                if st.hole_since is not None and st.next_offset is not None}

    def admit(self, partition: int, offset: int, now: float) -> Admission:
        st = self._current().setdefault(partition, _Partition(None))
        if st.next_offset is None or offset == st.next_offset:
            # Unknown position (never positioned: only under test harnesses) or the expected record.
            st.next_offset, st.hole_since, st.last_rewind_at = offset + 1, None, None
            return "apply"
        if offset < st.next_offset:
            return "applied"
        if st.hole_since is None:
            st.hole_since = now
        if now - st.hole_since < self.gap_timeout_s:
            return "held"
        self.gaps.append((partition, st.next_offset, offset))
        st.next_offset, st.hole_since, st.last_rewind_at = offset + 1, None, None
        return "gap"

    def rewinds_due(self, now: float) -> dict[int, int]:
        """Partitions with a (confirmed) hole whose rewind is due: partition -> offset to read from."""
        due = {}
        for p, st in self._parts.items():
            if st.hole_since is None or st.next_offset is None:
                continue
            if st.last_rewind_at is None or now - st.last_rewind_at >= self.rewind_interval_s:
                st.last_rewind_at = now
                due[p] = st.next_offset
        return due
