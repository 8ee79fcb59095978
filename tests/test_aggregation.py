"""Probabilities -> decisions -> homework events -> session summaries."""
from __future__ import annotations

from dataclasses import replace

import pytest

from homework_monitor.stream.aggregation import (
    QUOTE_CHARS,
    Decision,
    decide,
    homework_event,
    record_assignment,
    session_summary,
)
from homework_monitor.stream.schemas import CLASSES, Assignment
from homework_monitor.stream.windowing import Microdialogue, SessionState, WindowTurn

MODEL = "fake/1"


def scores(**top) -> dict[str, float]:
    base = {c: 0.0 for c in CLASSES}
    base.update(top)
    return base


def md(turn=4, text="Please write it down this week.", session_id="s1", start_s=12.5) -> Microdialogue:
    t = WindowTurn("therapist", text, turn, turn + 1, start_s, None)
    c = WindowTurn("client", "Okay.", turn + 2, turn + 2, None, None)
    return Microdialogue(session_id, (), t, c, closed_at=0.0)


def event(state=None, microdialogue=None, category="journal", p=0.8, model=MODEL, at=5.0):
    state = state or SessionState(session_id="s1", therapist_id="th-1", program_id="prog")
    microdialogue = microdialogue or md()
    s = scores(**{category: p, "none": 1 - p})
    return homework_event(state, microdialogue, s, decide(s, 0.5), model, at)


# ------------------------------------------------------------------------------------ decide
@pytest.mark.parametrize("s, threshold, expected", [
    (scores(practice=0.7, none=0.3), 0.5, Decision("practice", 0.7)),
    (scores(practice=0.5, none=0.3, learn=0.2), 0.5, Decision("practice", 0.5)),  # >= is homework
    (scores(practice=0.45, none=0.25, learn=0.3), 0.5, Decision("none", 0.25)),   # below threshold
    (scores(none=0.6, journal=0.4), 0.1, Decision("none", 0.6)),                  # top is none
    (scores(take_action=0.3, journal=0.3, none=0.4), 0.0, Decision("none", 0.4)),
    (scores(learn=0.31, none=0.29, journal=0.2, practice=0.2), 0.3, Decision("learn", 0.31)),
])
def test_decide_threshold_semantics(s, threshold, expected):
    assert decide(s, threshold) == expected


def test_decide_below_threshold_without_none_score_gives_zero_confidence():
    assert decide({"practice": 0.4, "learn": 0.3}, 0.5) == Decision("none", 0.0)


def test_decision_is_homework_unless_none():
    assert Decision("journal", 0.9).is_homework
    assert not Decision("none", 0.9).is_homework


# ------------------------------------------------------------------------------------- events
def test_homework_event_fields():
    e = event()
    assert (e.session_id, e.therapist_id, e.program_id, e.turn) == ("s1", "th-1", "prog", 4)
    assert (e.category, e.confidence, e.start_s, e.model_version, e.emitted_at) == ("journal", 0.8, 12.5, MODEL, 5.0)
    assert e.quote == "Please write it down this week."
    assert set(e.scores) == set(CLASSES)


def test_event_carries_the_trigger_seq():
    assert event(microdialogue=replace(md(), trigger_seq=9)).trigger_seq == 9
    assert event().trigger_seq is None


def test_event_id_is_deterministic():
    assert event(at=1.0).event_id == event(at=999.0).event_id  # emission time does not matter


def test_event_id_differs_by_turn_session_and_model():
    base = event().event_id
    assert event(microdialogue=md(turn=10)).event_id != base
    assert event(microdialogue=md(session_id="s2"), state=SessionState(session_id="s2")).event_id != base
    assert event(model="fake/2").event_id != base


def test_long_quote_is_truncated():
    e = event(microdialogue=md(text="word " * 200))
    assert len(e.quote) == QUOTE_CHARS and e.quote.endswith("…")


# -------------------------------------------------------------------------------- assignments
def test_record_assignment_adds_one_assignment():
    state = record_assignment(SessionState(session_id="s1"), event())
    assert state.assignments == (Assignment(turn=4, category="journal", confidence=0.8, start_s=12.5,
                                            quote="Please write it down this week."),)


def test_record_assignment_is_idempotent():
    e = event()
    once = record_assignment(SessionState(session_id="s1"), e)
    assert record_assignment(once, e) is once
    assert record_assignment(once, event(category="practice", p=0.95)) is once  # same turn


def test_assignments_are_kept_in_turn_order():
    state = SessionState(session_id="s1")
    for turn in (30, 2, 17):
        state = record_assignment(state, event(microdialogue=md(turn=turn)))
    assert [a.turn for a in state.assignments] == [2, 17, 30]


# ---------------------------------------------------------------------------------- summaries
def test_summary_categories_are_sorted_and_unique():
    state = SessionState(session_id="s1")
    for turn, cat in ((1, "practice"), (5, "journal"), (9, "practice"), (13, "learn")):
        state = record_assignment(state, event(microdialogue=md(turn=turn), category=cat))
    summary = session_summary(state, MODEL, 7.0)
    assert summary.categories == ["journal", "learn", "practice"]
    assert summary.homework_assigned
    assert [a.turn for a in summary.assignments] == [1, 5, 9, 13]


def test_summary_without_assignments():
    summary = session_summary(SessionState(session_id="s1", n_utterances=8, n_microdialogues=4), MODEL, 7.0)
    assert not summary.homework_assigned
    assert summary.categories == [] and summary.assignments == []
    assert (summary.n_utterances, summary.n_microdialogues) == (8, 4)


def test_summary_duration_from_first_start_to_last_time():
    state = SessionState(session_id="s1", first_start_s=12.0, last_time_s=3012.5)
    assert session_summary(state, MODEL, 0.0).duration_s == 3000.5
    assert session_summary(replace(state, first_start_s=None), MODEL, 0.0).duration_s is None
    assert session_summary(replace(state, last_time_s=None), MODEL, 0.0).duration_s is None


def test_summary_id_is_deterministic_and_carries_metadata():
    state = SessionState(session_id="s1", therapist_id="th", client_id="cl", program_id="p",
                         missing_utterances=2)
    a, b = session_summary(state, MODEL, 1.0), session_summary(state, MODEL, 2.0)
    assert a.summary_id == b.summary_id
    assert a.summary_id != session_summary(replace(state, session_id="s2"), MODEL, 1.0).summary_id
    assert (a.therapist_id, a.client_id, a.program_id, a.missing_utterances) == ("th", "cl", "p", 2)
