"""Every query against the known data set (tests/store/data.py), with figures worked out by hand."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from homework_monitor.store import access, ingest, queries
from homework_monitor.store.access import Viewer
from homework_monitor.store.queries import Fidelity

from . import data

SUP_P1 = Viewer("sup1", "supervisor", program_id="P1")
SUP_P2 = Viewer("sup2", "supervisor", program_id="P2")
T1 = Viewer("t1", "therapist", therapist_id="T1")
T2 = Viewer("t2", "therapist", therapist_id="T2")
NOW = datetime(2026, 11, 12, 12, tzinfo=UTC)
WEEK1, WEEK2 = date(2026, 11, 2), date(2026, 11, 9)


def cats(practice=0, take_action=0, journal=0, learn=0) -> dict[str, int]:
    return {"practice": practice, "take_action": take_action, "journal": journal, "learn": learn}


def fid(sessions, completed, with_homework, cat_sessions, cat_assignments, prior=0, reviewed=0, nudged=0,
        after=0) -> Fidelity:
    return Fidelity(sessions, completed, with_homework, cat_sessions, cat_assignments, prior, reviewed, nudged, after)


# Program P1 over [2 Nov, 16 Nov): a1..a5 (T1), b1, b4 (T2); b2 starts at the end, b3 before the start.
P1_TOTAL = fid(7, 4, 3, cats(practice=1, take_action=1, journal=1, learn=1),
               cats(practice=2, take_action=1, journal=1, learn=1), prior=3, reviewed=2, nudged=2, after=1)
T1_TOTAL = fid(5, 3, 2, cats(practice=1, journal=1, learn=1), cats(practice=2, journal=1, learn=1),
               prior=2, reviewed=1, nudged=2, after=1)
T2_TOTAL = fid(2, 1, 1, cats(take_action=1), cats(take_action=1), prior=1, reviewed=1)
P1_WEEK1 = fid(2, 2, 2, cats(practice=1, take_action=1, journal=1), cats(practice=2, take_action=1, journal=1),
               prior=1, reviewed=1)
P1_WEEK2 = fid(5, 2, 1, cats(learn=1), cats(learn=1), prior=2, reviewed=1, nudged=2, after=1)
EMPTY = fid(0, 0, 0, cats(), cats())


@pytest.fixture
def db(store):
    with store.session() as s:
        for m in data.messages():
            ingest.apply(s, m)
    with store.session() as s:
        yield s


def test_supervisor_fidelity_by_therapist(db):
    r = queries.fidelity_report(db, SUP_P1, data.START, data.END, "therapist")
    assert r.total == P1_TOTAL
    assert (r.total.assignment_rate, r.total.review_rate, r.total.nudge_follow_through) == (0.75, 2 / 3, 0.5)
    assert [(g.key, g.fidelity) for g in r.groups] == [("T1", T1_TOTAL), ("T2", T2_TOTAL)]
    assert [(w.week_start, w.fidelity) for w in r.weeks] == [(WEEK1, P1_WEEK1), (WEEK2, P1_WEEK2)]
    assert T1_TOTAL.assignment_rate == 2 / 3 and T1_TOTAL.review_rate == 0.5 and T1_TOTAL.nudge_follow_through == 0.5
    assert T2_TOTAL.nudge_follow_through is None  # no nudge, no rate
    d = r.total.as_dict()
    assert d["assignment_rate"] == 0.75 and d["category_assignments"]["practice"] == 2
    assert "quote" not in repr(r) and "task" not in repr(r)  # aggregates carry no text


def test_supervisor_fidelity_by_program(db):
    r = queries.fidelity_report(db, SUP_P1, data.START, data.END, "program")
    assert [(g.key, g.fidelity) for g in r.groups] == [("P1", P1_TOTAL)]
    r2 = queries.fidelity_report(db, SUP_P2, data.START, data.END, "program")
    c1 = fid(1, 1, 0, cats(), cats())
    assert r2.total == c1 and [(g.key, g.fidelity) for g in r2.groups] == [("P2", c1)]
    assert (c1.assignment_rate, c1.review_rate, c1.nudge_follow_through) == (0.0, None, None)


def test_narrowing_to_one_therapist(db):
    r = queries.fidelity_report(db, SUP_P1, data.START, data.END, therapist_id="T1")
    assert r.total == T1_TOTAL
    assert [w.fidelity.sessions for w in r.weeks] == [1, 4]


def test_a_therapist_sees_only_their_own_sessions(db):
    r = queries.fidelity_report(db, T1, data.START, data.END)
    assert r.total == T1_TOTAL and [g.key for g in r.groups] == ["T1"]
    # asking for another therapist's figures gives nothing, not their figures
    other = queries.fidelity_report(db, T1, data.START, data.END, therapist_id="T2")
    assert other.total == EMPTY and other.groups == [] and [w.fidelity for w in other.weeks] == [EMPTY, EMPTY]
    assert other.total.assignment_rate is None
    # and a supervisor of one program nothing of another
    assert queries.fidelity_report(db, SUP_P2, data.START, data.END, program_id="P1").total == EMPTY


def test_window_bounds_and_partial_weeks(db):
    # [Wed 4 Nov 12:00, Tue 10 Nov 00:00): only a2 (9 Nov 10:00); a5 (10 Nov 08:00) is past the end
    r = queries.fidelity_report(db, SUP_P1, datetime(2026, 11, 4, 12, tzinfo=UTC), datetime(2026, 11, 10, tzinfo=UTC))
    assert [(w.week_start, w.fidelity.sessions) for w in r.weeks] == [(WEEK1, 0), (WEEK2, 1)]
    assert r.total == fid(1, 1, 0, cats(), cats(), prior=1, reviewed=0, nudged=1, after=0)
    # the end is exclusive, the start inclusive: b2 starts at END, b3 one second before START
    after = queries.fidelity_report(db, T2, data.END, data.END + timedelta(days=7))
    assert after.total.sessions == 1 and after.total.with_homework == 1
    before = queries.fidelity_report(db, T2, data.START - timedelta(seconds=1), data.START)
    assert before.total.sessions == 1
    with pytest.raises(ValueError):
        queries.fidelity_report(db, T2, datetime(2026, 11, 1), data.END)  # naive time


def test_live_sessions(db):
    live = queries.live_sessions(db, SUP_P1, now=NOW)
    assert [(s.session_id, s.elapsed_s, s.homework_count, s.categories, s.nudges) for s in live] == [
        ("a4", 3 * 3600.0, 1, ["take_action"], ["review_previous"]),
        ("b4", 3600.0, 2, ["journal"], []),  # announced by nothing but its events; started at the first
    ]
    assert live[0].scheduled_minutes == 50 and live[0].client_id == "c4"
    # a5 opened 52 h before NOW and never ended: not live any more; with a longer max_age it is
    assert [s.session_id for s in queries.live_sessions(db, T1, now=NOW, max_age=timedelta(days=3))] == ["a5", "a4"]
    assert [s.session_id for s in queries.live_sessions(db, T2, now=NOW)] == ["b4"]
    assert queries.live_sessions(db, SUP_P2, now=NOW) == []


def test_list_sessions(db):
    items = queries.list_sessions(db, SUP_P1, data.START, data.END)
    assert [(i.session_id, i.n_nudges, i.homework_assigned) for i in items] == [
        ("b4", 0, None), ("a4", 1, None), ("a3", 2, True), ("a5", 0, None), ("a2", 2, False), ("b1", 0, True),
        ("a1", 0, True)]
    assert items[-1].categories == ["journal", "practice"] and items[2].ended_at is not None
    assert [i.session_id for i in queries.list_sessions(db, T2, data.START, data.END)] == ["b4", "b1"]
    assert [i.session_id for i in queries.list_sessions(db, SUP_P1, data.START, data.END, limit=2)] == ["b4", "a4"]


def test_session_detail(db):
    d = queries.session_detail(db, T1, "a3", now=NOW)
    assert d is not None and not d.live and d.homework_assigned and d.categories == ["learn"]
    assert d.note == "Homework assigned: read the chapter on worry before next time"
    assert [(x.turn, x.category, x.quote, x.votes_up, x.my_vote) for x in d.detections] == [
        (30, "learn", "read the chapter on worry before next time", 0, None)]
    assert [(a.turn, a.category) for a in d.assignments] == [(30, "learn")]
    assert [(n.rule, n.session_time_s) for n in d.nudges] == [("review_previous", 0.0), ("no_homework_yet", 2400.0)]
    assert d.nudges[0].previous_assignments[0].quote == "practice the breathing twice a day"
    assert (d.previous_session_id, d.previous_homework_reviewed) == ("x0", True)
    assert [a.quote for a in d.previous_homework] == ["practice the breathing twice a day"]
    assert [(r.turn, r.quote, r.source) for r in d.reviews] == [(2, "how did the breathing go", "rule")]
    assert (d.elapsed_s, d.duration_s, d.n_utterances, d.client_id) == (3000.0, 3000.0, 40, "c2")
    assert [(e.user_id, e.action, e.session_id) for e in access.audit_entries(db)] == [("t1", "view_session", "a3")]


def test_session_detail_while_live(db):
    d = queries.session_detail(db, SUP_P1, "a4", now=NOW, audit_action=None)
    assert d is not None and d.live and d.elapsed_s == 3 * 3600.0 and d.note is None and d.assignments == []
    assert d.categories == ["take_action"] and d.homework_assigned is None
    assert access.audit_entries(db) == []  # a refresh: not audited again


def test_session_detail_out_of_scope_is_absent(db):
    assert queries.session_detail(db, T2, "a3") is None  # another therapist's session
    assert queries.session_detail(db, SUP_P2, "a3") is None  # another program's
    assert queries.session_detail(db, T1, "nope") is None  # no such session: the same answer
    assert queries.session_detail(db, Viewer("x", "therapist"), "a3") is None  # no therapist id: nothing
    assert queries.session_detail(db, Viewer("x", "admin"), "a3") is None  # type: ignore[arg-type]
    assert access.audit_entries(db) == []  # nothing seen, nothing audited
    assert queries.session_detail(db, SUP_P1, "a3") is not None


def test_feedback_one_changeable_vote_per_user(db):
    eid = data.event("a3", 30, "learn", 0).event_id
    assert queries.record_feedback(db, T1, eid, "up") == queries.FeedbackTally(eid, 1, 0, "up")
    assert queries.record_feedback(db, SUP_P1, eid, "down") == queries.FeedbackTally(eid, 1, 1, "down")
    assert queries.record_feedback(db, T1, eid, "down") == queries.FeedbackTally(eid, 0, 2, "down")  # changed
    assert queries.record_feedback(db, T1, eid, "down") == queries.FeedbackTally(eid, 0, 2, "down")  # again: same
    assert db.query(ingest.HomeworkEventRow).count() == 8
    from homework_monitor.store.models import FeedbackRow
    assert sorted((f.user_id, f.vote) for f in db.query(FeedbackRow)) == [("sup1", -1), ("t1", -1)]
    d = queries.session_detail(db, T1, "a3", audit_action=None)
    assert (d.detections[0].votes_up, d.detections[0].votes_down, d.detections[0].my_vote) == (0, 2, "down")
    assert queries.record_feedback(db, T1, eid, None) == queries.FeedbackTally(eid, 0, 1, None)  # withdrawn
    with pytest.raises(LookupError):
        queries.record_feedback(db, T2, eid, "up")  # not T2's session
    with pytest.raises(LookupError):
        queries.record_feedback(db, T1, "no-such-event", "up")
    assert [e.action for e in access.audit_entries(db)] == ["feedback"] * 5
