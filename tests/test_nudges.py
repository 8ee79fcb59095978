"""Nudge rules (stream/nudges.py) with explicit clocks, alone and through process_batch.

Session time is the session's own clock: the last utterance's offset plus the wall time since it
arrived. The texts are short lines written for these tests.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from homework_monitor.stream.nudges import MESSAGES, NudgeConfig, check_due, due_rules, fire, session_time_s
from homework_monitor.stream.processor import nudge_checks_due, process_batch
from homework_monitor.stream.schemas import Assignment, Review, stable_id
from homework_monitor.stream.windowing import SessionState

CFG = NudgeConfig(default_scheduled_minutes=50, no_homework_before_end_min=10, review_within_min=10)
PREVIOUS = (Assignment(turn=12, category="journal", confidence=0.9, start_s=300.0,
                       quote="Keep a mood diary every evening this week."),)


def state(**fields) -> SessionState:
    """A session whose latest utterance (offset ``last_time_s``) arrived at wall clock 1000."""
    values = {"session_id": "s1", "therapist_id": "t-1", "client_id": "c-1", "started_at": 900.0,
              "last_activity_at": 1000.0, "last_time_s": 0.0}
    return SessionState(**{**values, **fields})


# --- session time ---------------------------------------------------------------------------------
def test_session_time_is_the_last_offset_plus_the_wall_time_since_it_arrived():
    s = state(last_time_s=600.0)
    assert session_time_s(s, 1000.0) == 600.0
    assert session_time_s(s, 1090.0) == 690.0  # no utterance since: the clock keeps running
    assert session_time_s(s, 990.0) == 600.0  # a clock behind the last arrival never goes back


def test_session_time_without_offsets_is_the_wall_time_since_the_first_message():
    s = state(last_time_s=None, last_activity_at=1000.0, started_at=900.0)
    assert session_time_s(s, 1000.0) == 100.0
    assert session_time_s(SessionState(session_id="x"), 1000.0) is None


# --- no homework yet ------------------------------------------------------------------------------
def test_no_homework_yet_falls_due_n_minutes_before_the_scheduled_end():
    s = state(scheduled_minutes=50)
    assert due_rules(replace(s, last_time_s=39 * 60 + 59), 1000.0, CFG) == []
    assert due_rules(replace(s, last_time_s=40 * 60), 1000.0, CFG) == ["no_homework_yet"]


def test_no_homework_yet_falls_due_between_utterances_by_the_wall_clock():
    s = state(last_time_s=39 * 60)  # default 50 minutes: due at 40:00
    assert not check_due(s, 1059.0, CFG)
    assert check_due(s, 1060.0, CFG)  # a minute of silence later, no utterance needed
    _, (nudge,) = fire(s, 1060.0, CFG)
    assert nudge.rule == "no_homework_yet" and nudge.session_time_s == 40 * 60


def test_no_homework_yet_uses_the_sessions_scheduled_minutes_and_half_time_for_short_sessions():
    assert due_rules(state(scheduled_minutes=30, last_time_s=20 * 60), 1000.0, CFG) == ["no_homework_yet"]
    assert due_rules(state(scheduled_minutes=30, last_time_s=19 * 60), 1000.0, CFG) == []
    # 10 minutes scheduled, N = 10: not at minute 0 but at half time
    assert due_rules(state(scheduled_minutes=10, last_time_s=4 * 60), 1000.0, CFG) == []
    assert due_rules(state(scheduled_minutes=10, last_time_s=5 * 60), 1000.0, CFG) == ["no_homework_yet"]


def test_no_homework_yet_is_not_due_once_homework_was_detected_or_the_session_ended():
    late = state(last_time_s=45 * 60)
    assigned = replace(late, assignments=(PREVIOUS[0].model_copy(update={"turn": 40}),))
    assert due_rules(assigned, 1000.0, CFG) == []
    assert due_rules(replace(late, ended=True), 1000.0, CFG) == []
    assert due_rules(replace(late, consent=False), 1000.0, CFG) == []


# --- review rules ---------------------------------------------------------------------------------
def test_review_previous_fires_at_session_start_with_the_previous_homework():
    s = state(previous_session_id="s0", previous_homework=PREVIOUS, last_time_s=5.0)
    new, (nudge,) = fire(s, 1000.0, CFG)
    assert nudge.rule == "review_previous" and nudge.previous_session_id == "s0"
    assert nudge.previous_assignments == list(PREVIOUS)
    assert (nudge.session_id, nudge.therapist_id, nudge.client_id) == ("s1", "t-1", "c-1")
    assert nudge.message == MESSAGES["review_previous"] and "diary" not in nudge.message
    assert nudge.nudge_id == stable_id("nudge", "s1", "review_previous")
    assert new.nudges_fired == ("review_previous",)


def test_no_review_nudges_without_previous_homework():
    assert due_rules(state(previous_session_id="s0", last_time_s=20 * 60), 1000.0, CFG) == []


def test_not_yet_reviewed_after_m_minutes_without_a_review():
    s = state(previous_session_id="s0", previous_homework=PREVIOUS, nudges_fired=("review_previous",))
    assert due_rules(replace(s, last_time_s=9 * 60), 1000.0, CFG) == []
    assert due_rules(replace(s, last_time_s=10 * 60), 1000.0, CFG) == ["not_yet_reviewed"]
    reviewed = replace(s, last_time_s=10 * 60,
                       reviews=(Review(turn=2, start_s=30.0, quote="How did the diary go?", source="rule"),))
    assert due_rules(reviewed, 1000.0, CFG) == []


# --- at most once, configurable ---------------------------------------------------------------------
def test_each_rule_fires_at_most_once_per_session():
    s = state(previous_session_id="s0", previous_homework=PREVIOUS, last_time_s=45 * 60)
    s, first = fire(s, 1000.0, CFG)
    assert sorted(n.rule for n in first) == ["no_homework_yet", "not_yet_reviewed", "review_previous"]
    s, again = fire(s, 2000.0, CFG)
    assert again == [] and not check_due(s, 3000.0, CFG)
    assert sorted(s.nudges_fired) == sorted(n.rule for n in first)


def test_a_rule_switched_off_never_fires():
    only = replace(CFG, rules=frozenset({"no_homework_yet"}))
    s = state(previous_session_id="s0", previous_homework=PREVIOUS, last_time_s=45 * 60)
    assert [n.rule for n in fire(s, 1000.0, only)[1]] == ["no_homework_yet"]
    assert fire(s, 1000.0, replace(CFG, rules=frozenset()))[1] == []


def test_config_comes_from_settings(settings_factory):
    cfg = NudgeConfig.from_settings(settings_factory(nudge_no_homework_before_end_min=5, nudge_review_within_min=3,
                                                     default_scheduled_minutes=45, nudge_rules=["review_previous"]))
    assert cfg == NudgeConfig(45, 5.0, 3.0, frozenset({"review_previous"}))


def test_nudge_checks_are_sent_for_due_sessions_and_not_resent_at_once():
    due, quiet = state(session_id="due", last_time_s=40 * 60), state(session_id="quiet", last_time_s=60.0)
    states = {"due": due, "quiet": quiet}
    assert nudge_checks_due(states, 1000.0, CFG, {}, resend_s=5.0) == ["due"]
    assert nudge_checks_due(states, 1002.0, CFG, {"due": 1000.0}, resend_s=5.0) == []
    assert nudge_checks_due(states, 1005.0, CFG, {"due": 1000.0}, resend_s=5.0) == ["due"]  # lost: again


# --- through the batch processor --------------------------------------------------------------------
@pytest.fixture
def nudge_settings(settings_factory):
    return settings_factory(silence_flush_s=30.0)


async def test_a_silence_check_fires_no_homework_yet_when_no_utterance_comes(
        nudge_settings, fake_classifier, clock, utterance_factory, record_factory):
    """A short session (10 minutes: due at 5:00) goes quiet at 4:50; the timer's check at 5:00 fires."""
    s = utterance_factory("s1", therapist_id="t-1", scheduled_minutes=10)
    states: dict = {}

    async def run(*msgs):
        result = await process_batch(record_factory(*msgs), states.get, fake_classifier, nudge_settings, clock)
        states.update(result.states)
        return result

    first = await run(s.start(), s.therapist("How are you today?", start_s=280.0),
                      s.client("Fine, thanks.", start_s=290.0))
    assert first.nudges == []
    clock.advance(5.0)
    assert not check_due(states["s1"], clock(), NudgeConfig.from_settings(nudge_settings))
    clock.advance(5.0)  # 4:50 + 10 s of silence = 5:00
    assert check_due(states["s1"], clock(), NudgeConfig.from_settings(nudge_settings))
    checked = await run(s.silence(clock()))
    (nudge,) = checked.nudges
    assert nudge.rule == "no_homework_yet" and nudge.session_time_s == pytest.approx(300.0)
    # the same check redelivered, and later messages, fire nothing again
    again = await run(s.silence(clock()), s.therapist("Anything else?", start_s=320.0))
    assert again.nudges == [] and states["s1"].nudges_fired == ("no_homework_yet",)


async def test_replaying_a_batch_from_the_stored_state_re_sends_the_same_nudge_id(
        nudge_settings, fake_classifier, clock, utterance_factory, record_factory):
    """A crash between sending a nudge and storing the state: the replay sends the same id once more."""
    s = utterance_factory("s1", scheduled_minutes=10)
    records = record_factory(s.start(), s.therapist("Let's check in.", start_s=301.0), s.client("Okay.", start_s=305.0))
    first = await process_batch(records, {}.get, fake_classifier, nudge_settings, clock)
    replayed = await process_batch(records, {}.get, fake_classifier, nudge_settings, clock)
    assert [n.nudge_id for n in first.nudges] == [n.nudge_id for n in replayed.nudges] == \
        [stable_id("nudge", "s1", "no_homework_yet")]


async def test_homework_detected_in_the_same_batch_prevents_the_nudge(
        nudge_settings, fake_classifier, clock, utterance_factory, record_factory):
    s = utterance_factory("s1", scheduled_minutes=10)
    result = await process_batch(record_factory(
        s.start(), s.therapist("Please write down three good moments each day.", start_s=310.0),
        s.client("I will.", start_s=320.0), s.therapist("Good.", start_s=325.0)),
        {}.get, fake_classifier, nudge_settings, clock)
    assert [e.turn for e in result.events] == [0] and result.nudges == []


async def test_a_session_that_ends_in_the_batch_of_its_due_utterance_still_gets_the_nudge(
        nudge_settings, fake_classifier, clock, utterance_factory, record_factory):
    """A worker behind its input reads the end with the utterance that made the rule due: the nudge is
    judged on the session's own clock before the end, so it is not lost (it arrives late)."""
    s = utterance_factory("late", scheduled_minutes=10)
    result = await process_batch(record_factory(
        s.start(), s.therapist("How was the week?", start_s=280.0), s.client("Fine.", start_s=301.0), s.end()),
        {}.get, fake_classifier, nudge_settings, clock)
    assert [n.rule for n in result.nudges] == ["no_homework_yet"] and result.summaries
    assert result.nudges[0].session_time_s == pytest.approx(301.0)


async def test_a_session_that_ended_before_the_due_time_gets_no_nudge(
        nudge_settings, fake_classifier, clock, utterance_factory, record_factory):
    s = utterance_factory("short", scheduled_minutes=10)
    clock.advance(1000)  # however late the worker reads it: the session's clock ended at 4:50
    result = await process_batch(record_factory(
        s.start(), s.therapist("How was the week?", start_s=280.0), s.client("Fine.", start_s=290.0), s.end()),
        {}.get, fake_classifier, nudge_settings, clock)
    assert result.nudges == [] and result.summaries
