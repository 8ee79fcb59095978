"""The source position rules (stream/progress.py): where a partition resumes, and which records apply."""
from __future__ import annotations

import pytest

from homework_monitor.stream.progress import (
    Position,
    SourceProgress,
    is_marker_key,
    marker_key,
    marker_next_offset,
    marker_value,
    plan_position,
)


@pytest.mark.parametrize(("marker", "committed", "log_start", "want"), [
    (None, None, 0, Position(0, 0)),          # nothing applied, nothing committed: the whole log
    (None, 40, 0, Position(40, 40)),          # no marker: the committed offset is the state's position
    (25, 40, 0, Position(25, 25)),            # commit ahead of the state: read again from the state
    (40, 25, 0, Position(25, 40)),            # state ahead of the commit: re-read and skip 25..39
    (40, None, 0, Position(40, 40)),
    (40, 40, 0, Position(40, 40)),
    (10, 40, 30, Position(30, 30, lost=20)),  # retention deleted 10..29 before the state saw them
    (None, None, None, Position(None, None)),
])
def test_plan_position(marker, committed, log_start, want):
    assert plan_position(marker, committed, log_start) == want


def test_marker_keys_never_collide_with_session_ids():
    key = marker_key("utterances", 3)
    assert is_marker_key(key) and is_marker_key(list(key))  # JSON round trip gives a list
    assert not is_marker_key("source-offset") and not is_marker_key(("other", "utterances", 3))
    assert marker_next_offset(marker_value(17)) == 17 and marker_next_offset(None) is None


def progress(**kw) -> SourceProgress:
    p = SourceProgress(gap_timeout_s=kw.get("gap", 30.0), rewind_interval_s=kw.get("rewind", 2.0))
    p.reset(0, kw.get("start", 10))
    return p


def test_records_apply_in_offset_order_and_redeliveries_are_skipped():
    p = progress()
    assert [p.admit(0, o, 0.0) for o in (8, 9, 10, 11, 10, 12)] == \
        ["applied", "applied", "apply", "apply", "applied", "apply"]
    assert p.next_offset(0) == 13


def test_a_hole_holds_later_records_until_it_is_read_again():
    p = progress()
    assert p.admit(0, 14, 100.0) == "held"           # 10..13 were not delivered
    assert p.rewinds_due(100.0) == {0: 10}           # read again from 10
    assert p.admit(0, 15, 100.5) == "held"           # stale records after the hole stay held
    assert p.rewinds_due(101.0) == {}                # not before the rewind interval
    assert p.rewinds_due(102.0) == {0: 10}           # and again after it while the hole lasts
    assert [p.admit(0, o, 102.5) for o in (10, 11, 12, 13, 14)] == ["apply"] * 5
    assert p.holes() == {} and p.rewinds_due(200.0) == {}


def test_a_hole_that_never_fills_is_a_reported_gap():
    p = progress(gap=30.0)
    assert p.admit(0, 14, 100.0) == "held"
    assert p.admit(0, 14, 129.9) == "held"
    assert p.admit(0, 14, 130.0) == "gap"            # the log has nothing at 10..13
    assert p.gaps == [(0, 10, 14)]
    assert p.next_offset(0) == 15 and p.holes() == {}


def test_unpositioned_partition_starts_at_its_first_record():
    p = SourceProgress(gap_timeout_s=30.0, rewind_interval_s=2.0)
    assert p.admit(2, 5, 0.0) == "apply" and p.next_offset(2) == 6
    p.forget([2])
    assert p.next_offset(2) is None


def test_partitions_are_independent():
    p = progress()
    p.reset(1, 0)
    assert p.admit(1, 3, 0.0) == "held" and p.admit(0, 10, 0.0) == "apply"
    assert p.holes() == {1: 0}


def test_a_batch_that_fails_is_admitted_again():
    p = progress()
    p.begin()
    assert [p.admit(0, o, 0.0) for o in (10, 11, 12)] == ["apply"] * 3
    assert p.next_offset(0) == 10  # a marker may record the batch only once it confirms
    # the batch failed before its states were staged: no confirm
    p.begin()
    assert p.next_offset(0) == 10
    assert [p.admit(0, o, 0.0) for o in (10, 11, 12)] == ["apply"] * 3
    p.confirm()
    p.begin()
    assert p.admit(0, 12, 0.0) == "applied" and p.admit(0, 13, 0.0) == "apply"


def test_repositioning_during_a_batch_wins_over_it():
    p = progress()
    p.begin()
    assert p.admit(0, 10, 0.0) == "apply"
    p.reset(0, 4)  # the partition was positioned from the recovered state meanwhile
    p.confirm()
    assert p.next_offset(0) == 4


def test_a_partition_revoked_during_a_batch_stays_forgotten():
    p = progress()
    p.begin()
    assert p.admit(0, 10, 0.0) == "apply"
    p.forget([0])                    # revoked while the batch is being applied
    assert p.next_offset(0) is None
    p.confirm()
    assert p.next_offset(0) is None  # the batch's confirm does not bring it back
    p.begin()
    p.forget([0])
    p.reset(0, 11)                   # revoked and assigned back during one batch
    p.confirm()
    assert p.next_offset(0) == 11
