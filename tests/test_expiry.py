"""Retired sessions leave the table after the grace period (stream/expiry.py), by an explicit clock."""
from __future__ import annotations

from homework_monitor.stream.expiry import expired_by_partition, is_expired, session_fields, with_retirement
from homework_monitor.stream.windowing import SessionState

GRACE = 24 * 3600.0


def retired(sid: str, at: float, partition: int = 0) -> dict:
    state = SessionState(session_id=sid, last_seq=9, n_utterances=10, ended=True)
    return with_retirement(state.to_json(), at, partition)


def test_tombstone_expires_only_after_the_grace_period():
    value = retired("s1", at=1_000.0)
    assert not is_expired(value, 1_000.0, GRACE)
    assert not is_expired(value, 1_000.0 + GRACE - 1, GRACE)
    assert is_expired(value, 1_000.0 + GRACE, GRACE)


def test_open_sessions_and_untimed_tombstones_never_expire():
    open_state = SessionState(session_id="s2", last_seq=3).to_json()
    old_tombstone = SessionState(session_id="s3", ended=True).to_json()  # written before retired_at existed
    assert not is_expired(open_state, 1e12, GRACE)
    assert not is_expired(old_tombstone, 1e12, GRACE)
    assert not is_expired(None, 1e12, GRACE)


def test_due_sessions_grouped_by_partition_markers_ignored():
    items = [("a", retired("a", 0.0, partition=1)), ("b", retired("b", 0.0, partition=3)),
             ("c", retired("c", 90_000.0, partition=1)), (("source-offset", "utterances", 1), {"next_offset": 5})]
    assert expired_by_partition(items, GRACE + 1.0, GRACE) == {1: ["a"], 3: ["b"]}


def test_the_stored_state_round_trips_without_the_table_fields():
    value = retired("s1", at=5.0, partition=2)
    assert SessionState.from_json(session_fields(value)).last_seq == 9
