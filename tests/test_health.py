"""The rules behind /healthz and /readyz and the worker's decision to exit (stream/health.py): pure,
driven by an explicit clock."""
from __future__ import annotations

import pytest

from homework_monitor.stream.health import HealthState

P0, P1 = ("utterances", 0), ("utterances", 1)


def healthy(now: float = 0.0, **limits) -> HealthState:
    """A worker that started, owns P0 and P1 with nothing to do, and sees a ready Triton."""
    h = HealthState(**{"stall_timeout_s": 120.0, "stall_exit_s": 300.0, "broker_unreachable_exit_s": 60.0,
                       **limits})
    h.heartbeat(now)
    h.agent_running(True, now)
    h.assigned([P0, P1], now)
    h.broker_observed(now, committed={P0: 10, P1: 20}, listed_end={P0: 10, P1: 20}, fetch_end={})
    h.triton_observed(True)
    return h


def at(h: HealthState, t: float) -> float:
    """Time passes with a turning event loop (its heartbeat)."""
    h.heartbeat(t)
    return t


def test_a_worker_with_nothing_to_do_is_live_and_ready():
    h = healthy()
    assert h.liveness(1.0).ok and h.readiness(1.0).ok
    assert h.evaluate(1.0).lags == {P0: 0, P1: 0}
    assert h.readiness(1.0).as_dict() == {"status": "ok", "reasons": []}


def test_lag_without_progress_is_a_stall_then_a_reason_to_exit():
    h = healthy()
    h.broker_observed(5.0, committed={P0: 10, P1: 20}, listed_end={P0: 15, P1: 20}, fetch_end={})
    assert h.evaluate(5.0).lags[P0] == 5
    assert h.readiness(at(h, 124.0)).ok  # waiting 119 s
    assert h.readiness(at(h, 125.0)).reasons == ("stalled",)
    assert h.liveness(125.0).ok  # a stall is not a dead process (yet)
    first = h.evaluate(125.0)
    assert first.newly_stalled == (P0,) and first.exit_reason is None
    assert h.evaluate(at(h, 200.0)).newly_stalled == ()  # counted once
    assert h.evaluate(at(h, 304.0)).exit_reason is None
    assert h.evaluate(at(h, 305.0)).exit_reason == "stalled"


def test_progress_restarts_the_wait_even_while_lag_remains():
    h = healthy()
    h.broker_observed(0.0, committed={P0: 10, P1: 20}, listed_end={P0: 1000, P1: 20}, fetch_end={})
    for t in range(60, 600, 60):
        h.processed({P0: 10 + t}, float(t))  # slow but moving
        assert h.readiness(at(h, t + 59.0)).ok
        assert h.evaluate(t + 59.0).exit_reason is None


def test_a_partition_idle_for_long_is_not_stalled_the_moment_a_record_arrives():
    h = healthy()
    h.broker_observed(at(h, 3600.0), committed={P0: 10, P1: 20}, listed_end={P0: 11, P1: 20}, fetch_end={})
    assert h.readiness(3600.0).ok
    assert h.waited(3700.0) == {P0: 100.0}


def test_the_fetch_highwater_is_used_when_list_offsets_answers_low():
    """tansu answers ListOffsets with the last batch's base offset + 1; the fetch highwater is exact."""
    h = healthy()
    h.broker_observed(1.0, committed={P0: 10, P1: 20}, listed_end={P0: 8, P1: 20}, fetch_end={P0: 14})
    assert h.evaluate(1.0).lags[P0] == 4


def test_what_this_worker_processed_counts_before_the_group_commits_it():
    h = healthy()
    h.broker_observed(1.0, committed={P0: 10, P1: 20}, listed_end={P0: 30, P1: 20}, fetch_end={})
    h.processed({P0: 29}, 2.0)  # committed offset still 10 until the next commit
    assert h.evaluate(2.0).lags[P0] == 0
    assert h.waited(500.0) == {}


def test_a_group_without_committed_offsets_reads_from_the_start():
    h = healthy()
    h.assigned([P0, P1, ("utterances", 2)], 0.0)
    h.broker_observed(1.0, committed={P0: 10, P1: 20, ("utterances", 2): -1},
                      listed_end={P0: 10, P1: 20, ("utterances", 2): 7}, fetch_end={})
    assert h.evaluate(1.0).lags[("utterances", 2)] == 7
    assert h.readiness(at(h, 121.0)).reasons == ("stalled",)


@pytest.mark.parametrize("committed, listed, fetched", [
    ({P0: -1, P1: 20}, {P0: 10, P1: 20}, {}),    # the group's offsets vanished
    ({P0: None, P1: 20}, {P0: 10, P1: 20}, {}),
    ({P0: 3, P1: 20}, {P0: 10, P1: 20}, {}),     # went backwards
    ({P0: 10, P1: 20}, {P0: 0, P1: 20}, {}),     # the log end went backwards
])
def test_offsets_going_backwards_mean_the_broker_lost_data(committed, listed, fetched):
    h = healthy()
    assert h.broker_observed(1.0, committed, listed, fetched) == [P0]


def test_fetch_highwater_going_backwards_means_the_broker_lost_data():
    h = healthy()
    assert h.broker_observed(1.0, {P0: 10, P1: 20}, {P0: 10, P1: 20}, {P0: 12}) == []
    assert h.broker_observed(2.0, {P0: 10, P1: 20}, {P0: 10, P1: 20}, {P0: 0}) == [P0]


def test_lost_data_is_seen_across_reassignments():
    """The group commits only forward whoever owns a partition; after a broker restart faust may rejoin
    (revoke, reassign) before the next check."""
    h = healthy()
    h.assigned([P1], 1.0)  # P0 went to another worker, which took it further
    h.broker_observed(2.0, {P1: 20}, {P1: 20}, {})
    h.assigned([P0, P1], 3.0)
    assert h.broker_observed(4.0, {P0: 50, P1: 20}, {P0: 50, P1: 20}, {}) == []
    h.assigned([], 5.0)  # the rebalance after a broker restart
    h.assigned([P0, P1], 6.0)
    assert sorted(h.broker_observed(7.0, {P0: -1, P1: -1}, {P0: 0, P1: 0}, {})) == [P0, P1]


def test_an_unreachable_broker_makes_the_worker_unready_then_exit():
    h = healthy()
    h.broker_failed(10.0)
    assert h.readiness(10.0).reasons == ("broker_unreachable",)
    assert h.liveness(10.0).ok
    h.broker_failed(30.0)  # still the same outage
    assert h.evaluate(69.0).exit_reason is None
    assert h.evaluate(70.0).exit_reason == "broker_unreachable"
    h.broker_observed(71.0, {P0: 10, P1: 20}, {P0: 10, P1: 20}, {})
    assert h.readiness(71.0).ok and h.evaluate(200.0).exit_reason is None


def test_a_fatal_error_fails_both_probes_and_blocks_commits():
    h = healthy()
    assert h.commits_blocked is None
    assert h.fail("batch_failed") is True
    assert h.fail("stalled") is False  # the first reason stays
    assert h.fatal == "batch_failed" and h.commits_blocked == "batch_failed"
    assert h.liveness(1.0).reasons == ("fatal",)
    assert "fatal" in h.readiness(1.0).reasons
    with pytest.raises(ValueError):
        h.fail("some text that is not a reason")


def test_blocked_commits_alone_do_not_fail_the_probes():
    h = healthy()
    h.block_commits("batch_interrupted")
    assert h.commits_blocked == "batch_interrupted" and h.liveness(1.0).ok


def test_a_loop_that_stops_turning_fails_liveness():
    h = healthy()
    h.heartbeat(50.0)
    assert h.liveness(170.0).ok
    assert h.liveness(171.0).reasons == ("loop_blocked",)


def test_an_agent_that_is_gone_fails_liveness_after_the_timeout():
    h = healthy()
    h.agent_running(False, 10.0)
    assert h.liveness(at(h, 130.0)).ok and h.readiness(130.0).reasons == ("agent_down",)
    assert h.liveness(at(h, 131.0)).reasons == ("agent_down",)
    h.agent_running(True, 132.0)  # faust restarted it
    assert h.liveness(at(h, 133.0)).ok and h.readiness(133.0).ok


def test_readiness_wants_partitions_a_broker_and_triton():
    h = HealthState(stall_timeout_s=120.0, stall_exit_s=300.0, broker_unreachable_exit_s=60.0)
    assert h.liveness(0.0).ok  # starting up is alive
    assert h.readiness(0.0).reasons == ("starting", "no_partitions", "broker_unreachable", "triton_unavailable")
    h = healthy()
    h.triton_observed(False)
    assert h.readiness(1.0).reasons == ("triton_unavailable",)
    h.assigned([], 2.0)
    h.triton_observed(True)
    assert h.readiness(2.0).reasons == ("no_partitions",)
