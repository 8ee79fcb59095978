"""Known store contents for the query tests: a small, hand-made set of sessions whose figures are
worked out by hand in test_queries.py. Quotes are written for these tests (no corpus text).

Program P1: therapists T1 and T2; program P2: therapist T3. The window is [2026-11-02, 2026-11-16):
two ISO weeks, starting Monday 2 and Monday 9 November.
"""
from __future__ import annotations

from datetime import UTC, datetime

from homework_monitor.stream.schemas import (
    Assignment,
    HomeworkEvent,
    Nudge,
    Review,
    SessionOpened,
    SessionSummary,
    stable_id,
)

MODEL = "test-model-1"
START = datetime(2026, 11, 2, tzinfo=UTC)
END = datetime(2026, 11, 16, tzinfo=UTC)


def ts(day: int, hour: int, minute: int = 0, second: int = 0, month: int = 11) -> float:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC).timestamp()


IDS = {"a": ("T1", "P1"), "b": ("T2", "P1"), "c": ("T3", "P2"), "l": ("T4", "P3")}


def _ids(sid: str) -> dict:
    therapist, program = IDS[sid[0]]
    return {"therapist_id": therapist, "program_id": program}


def opened(sid: str, at: float, client: str | None = None, scheduled: int | None = 50) -> SessionOpened:
    return SessionOpened(session_id=sid, client_id=client, scheduled_minutes=scheduled, started_at=at,
                         start_s=0.0, emitted_at=at, **_ids(sid))


def event(sid: str, turn: int, category: str, at: float, quote: str | None = None,
          client: str | None = None) -> HomeworkEvent:
    return HomeworkEvent(event_id=stable_id("event", sid, turn, MODEL), session_id=sid, client_id=client,
                         turn=turn, category=category, confidence=0.8 + turn / 1000,
                         scores={category: 0.8 + turn / 1000, "none": 0.1}, quote=quote or f"{category} task {turn}",
                         start_s=turn * 20.0, trigger_seq=turn + 1, emitted_at=at, model_version=MODEL, **_ids(sid))


def nudge(sid: str, rule: str, at: float, session_time_s: float, previous: list[Assignment] | None = None,
          previous_session_id: str | None = None) -> Nudge:
    return Nudge(nudge_id=stable_id("nudge", sid, rule), session_id=sid, rule=rule,  # type: ignore[arg-type]
                 message=f"fixed wording of {rule}", session_time_s=session_time_s,
                 previous_session_id=previous_session_id, previous_assignments=previous or [], emitted_at=at,
                 **_ids(sid))


def assignment(turn: int, category: str, quote: str | None = None) -> Assignment:
    return Assignment(turn=turn, category=category, confidence=0.8 + turn / 1000,  # type: ignore[arg-type]
                      start_s=turn * 20.0, quote=quote or f"{category} task {turn}")


def summary(sid: str, started: float, ended: float, assignments: list[Assignment], *, client: str | None = None,
            previous_session_id: str | None = None, previous_homework: list[Assignment] | None = None,
            reviewed: bool | None = None, reviews: list[Review] | None = None, model: str = MODEL) -> SessionSummary:
    cats = sorted({a.category for a in assignments})
    note = ("No homework assigned this session." if not assignments
            else "Homework assigned: " + "; ".join(a.quote for a in assignments))
    return SessionSummary(
        summary_id=stable_id("summary", sid, model), session_id=sid, client_id=client, scheduled_minutes=50,
        started_at=started, homework_assigned=bool(assignments), categories=cats,  # type: ignore[arg-type]
        assignments=assignments, note=note, previous_session_id=previous_session_id,
        previous_homework=previous_homework or [], previous_homework_reviewed=reviewed, reviews=reviews or [],
        n_utterances=40, n_microdialogues=15, missing_utterances=0, duration_s=ended - started,
        emitted_at=ended, model_version=model, **_ids(sid))


PREVIOUS_HW = [assignment(4, "practice", "practice the breathing twice a day")]


def messages() -> list:
    """Every message of the known data set, in the order a stream might deliver them."""
    m: list = []
    # a1 (T1, week 1): homework journal + practice x2; the client's first session.
    a1 = ts(2, 10)
    m += [opened("a1", a1, "c1"), event("a1", 5, "journal", a1 + 600, client="c1"),
          event("a1", 9, "practice", a1 + 900, client="c1"), event("a1", 12, "practice", a1 + 1200, client="c1"),
          summary("a1", a1, a1 + 3000, [assignment(5, "journal"), assignment(9, "practice"), assignment(12, "practice")],
                  client="c1")]
    # a2 (T1, week 2): no homework; previous (a1) had homework, not reviewed; nudged, no follow-through.
    a2 = ts(9, 10)
    m += [opened("a2", a2, "c1"),
          nudge("a2", "review_previous", a2 + 1, 0.0, [assignment(5, "journal")], "a1"),
          nudge("a2", "no_homework_yet", a2 + 2400, 2400.0),
          summary("a2", a2, a2 + 3000, [], client="c1", previous_session_id="a1",
                  previous_homework=[assignment(5, "journal")], reviewed=False)]
    # a3 (T1, week 2): nudged at +40 min, then homework (learn) at +45 min: follows through; reviewed.
    a3 = ts(10, 10)
    m += [opened("a3", a3, "c2"),
          nudge("a3", "review_previous", a3 + 1, 0.0, PREVIOUS_HW, "x0"),
          nudge("a3", "no_homework_yet", a3 + 2400, 2400.0),
          event("a3", 30, "learn", a3 + 2700, "read the chapter on worry before next time", client="c2"),
          summary("a3", a3, a3 + 3000, [assignment(30, "learn", "read the chapter on worry before next time")],
                  client="c2", previous_session_id="x0", previous_homework=PREVIOUS_HW, reviewed=True,
                  reviews=[Review(turn=2, start_s=40.0, quote="how did the breathing go", source="rule")])]
    # a4 (T1, week 2): live at 2026-11-12 12:00, one event so far, a review nudge.
    a4 = ts(12, 9)
    m += [opened("a4", a4, "c4"), nudge("a4", "review_previous", a4 + 1, 0.0, PREVIOUS_HW, "x1"),
          event("a4", 7, "take_action", a4 + 900, client="c4")]
    # a5 (T1, week 2): opened, never summarised (its worker lost it): a session, not completed, not live.
    m += [opened("a5", ts(10, 8), "c5")]
    # b1 (T2, week 1): homework take_action; previous homework reviewed.
    b1 = ts(3, 14)
    m += [opened("b1", b1, "c3"), event("b1", 11, "take_action", b1 + 1000, client="c3"),
          summary("b1", b1, b1 + 2800, [assignment(11, "take_action")], client="c3", previous_session_id="x2",
                  previous_homework=PREVIOUS_HW, reviewed=True)]
    # b2 (T2): starts exactly at the window's end: outside [START, END).
    b2 = END.timestamp()
    m += [opened("b2", b2, "c3"), summary("b2", b2, b2 + 3000, [assignment(3, "journal")], client="c3")]
    # b3 (T2): one second before the window.
    b3 = START.timestamp() - 1
    m += [opened("b3", b3, "c6"), summary("b3", b3, b3 + 3000, [assignment(3, "journal")], client="c6")]
    # b4 (T2, week 2): events only (never announced): a placeholder session started at its first event.
    m += [event("b4", 20, "journal", ts(12, 11, 30)), event("b4", 3, "journal", ts(12, 11))]
    # c1 (T3, program P2, week 1): no homework.
    c1 = ts(4, 9)
    m += [opened("c1", c1, "c7"), summary("c1", c1, c1 + 3000, [], client="c7")]
    return m


def load(n_sessions: int) -> list:
    """More traffic: ``n_sessions`` sessions of therapist T4 (program P3) with 3 events, a nudge and a
    summary each (6 messages per session)."""
    m: list = []
    for i in range(n_sessions):
        sid, t = f"l{i:04d}", ts(20, 8) + 600 * i
        events = [event(sid, turn, "practice", t + 60 * turn, f"load practice {i} turn {turn}") for turn in (2, 4, 6)]
        m += [opened(sid, t, f"lc{i}"), *events, nudge(sid, "no_homework_yet", t + 30, 30.0),
              summary(sid, t, t + 1800, [assignment(e.turn, "practice", e.quote) for e in events])]
    return m
