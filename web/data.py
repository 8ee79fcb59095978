"""What the pages show, read through the store's query API (``homework_monitor.store.queries``) and
shaped for the templates, the JSON endpoints and the event stream: labels, rates, times.

Every function takes the viewer and passes it to the store, which scopes every read. Aggregates (live
list, session lists, fidelity, trend) carry ids, counts and rates only: no quote, no note.
"""
from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from homework_monitor.store.access import Viewer
from homework_monitor.store.models import HomeworkEventRow
from homework_monitor.store.queries import (
    AssignmentView,
    Detection,
    Fidelity,
    NudgeView,
    SessionListItem,
    fidelity_report,
    list_sessions,
    live_sessions,
    record_feedback,
    session_detail,
)
from homework_monitor.stream.aggregation import CATEGORY_TITLES
from homework_monitor.stream.schemas import HOMEWORK_CLASSES

Window = Literal["week", "month"]
WINDOW_DAYS = {"week": 7, "month": 30}
TREND_WEEKS = 8
RECENT_DAYS = 30
MAX_TREND_THERAPISTS = 8
WINDOW_SESSIONS = 200  # drill-down list of the fidelity page


# --- labels ----------------------------------------------------------------------------------------
def clock_label(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    minutes, secs = divmod(int(round(max(0.0, seconds))), 60)
    return f"{minutes}:{secs:02d}"


def percent(num: int, den: int) -> str:
    return f"{round(100 * num / den)}%" if den else "—"


def rate_label(num: int, den: int) -> str:
    return f"{percent(num, den)} ({num}/{den})" if den else "—"


def when_label(t: datetime | None) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if t else "—"


def _category(cat: str) -> dict[str, str]:
    return {"category": cat, "category_title": CATEGORY_TITLES.get(cat, cat)}


# --- one session (quotes allowed: session views only) ------------------------------------------------
def _detection(d: Detection) -> dict[str, Any]:
    return {"event_id": d.event_id, "turn": d.turn, **_category(d.category), "quote": d.quote,
            "confidence": d.confidence, "confidence_label": f"{round(100 * d.confidence)}%",
            "start_s": d.start_s, "time_label": clock_label(d.start_s), "my_vote": d.my_vote,
            "votes_up": d.votes_up, "votes_down": d.votes_down}


def _assignment(a: AssignmentView) -> dict[str, Any]:
    return {"turn": a.turn, **_category(a.category), "quote": a.quote, "confidence": a.confidence,
            "start_s": a.start_s, "time_label": clock_label(a.start_s)}


def _nudge(n: NudgeView) -> dict[str, Any]:
    return {"nudge_id": n.nudge_id, "rule": n.rule, "message": n.message, "session_time_s": n.session_time_s,
            "time_label": f"at {clock_label(n.session_time_s)}" if n.session_time_s is not None else "",
            "previous_session_id": n.previous_session_id,
            "previous_assignments": [_assignment(a) for a in n.previous_assignments]}


def _followup(previous_session_id: str | None, previous: list[AssignmentView], reviewed: bool | None) -> str:
    if previous_session_id is None or not previous:
        return ""
    cats = ", ".join(sorted({CATEGORY_TITLES.get(a.category, a.category) for a in previous}))
    verdict = ("review unknown" if reviewed is None else
               "reviewed in this session" if reviewed else "not reviewed in this session")
    return f"Homework from the previous session ({cats}): {verdict}."


def session_view(db: Session, viewer: Viewer, session_id: str, audit_action: str | None) -> dict[str, Any] | None:
    """The session as the panel shows it; None when it does not exist or is out of scope. The store
    appends the audit record (``audit_action``; None for a stream's refresh of a view already audited)."""
    s = session_detail(db, viewer, session_id, audit_action=audit_action)
    if s is None:
        return None
    return {
        "session_id": s.session_id, "therapist_id": s.therapist_id, "client_id": s.client_id,
        "program_id": s.program_id, "scheduled_minutes": s.scheduled_minutes,
        "started_at": s.started_at.isoformat(), "started_at_epoch": s.started_at.timestamp(),
        "ended": not s.live, "elapsed_label": (f"{clock_label(s.elapsed_s)} elapsed" if s.live else
                          f"lasted {clock_label(s.duration_s if s.duration_s is not None else s.elapsed_s)}"),
        "homework_assigned": s.homework_assigned, "categories": s.categories,
        "events": [_detection(d) for d in s.detections], "nudges": [_nudge(n) for n in s.nudges],
        "assignments": [_assignment(a) for a in s.assignments], "note": s.note,
        "previous_session_id": s.previous_session_id,
        "previous_homework_reviewed": s.previous_homework_reviewed,
        "followup_label": _followup(s.previous_session_id, s.previous_homework, s.previous_homework_reviewed),
    }


def set_vote(db: Session, viewer: Viewer, session_id: str, event_id: str, vote: Literal["up", "down"] | None
             ) -> dict[str, Any] | None:
    """Store the viewer's vote on a detection of this session (audited by the store); None when the
    detection is not in this session or the session is out of scope (answered as not found)."""
    in_session = db.scalar(select(HomeworkEventRow.session_id).where(HomeworkEventRow.event_id == event_id))
    if in_session != session_id:
        return None
    try:
        tally = record_feedback(db, viewer, event_id, vote)
    except LookupError:
        return None
    return {"event_id": tally.event_id, "vote": tally.my_vote, "votes_up": tally.votes_up,
            "votes_down": tally.votes_down}


# --- lists (no text) -----------------------------------------------------------------------------------
def live_rows(db: Session, viewer: Viewer) -> list[dict[str, Any]]:
    return [{"session_id": r.session_id, "therapist_id": r.therapist_id, "program_id": r.program_id,
             "started_at": r.started_at.timestamp(), "elapsed_label": clock_label(r.elapsed_s),
             "homework_so_far": r.homework_count, "nudges_sent": len(r.nudges)}
            for r in live_sessions(db, viewer)]


def _list_row(r: SessionListItem) -> dict[str, Any]:
    return {"session_id": r.session_id, "therapist_id": r.therapist_id, "program_id": r.program_id,
            "started_label": when_label(r.started_at), "ended": r.ended_at is not None,
            "homework_assigned": r.homework_assigned,
            "categories_label": ", ".join(CATEGORY_TITLES.get(c, c) for c in r.categories) or "—",
            "nudges_sent": r.n_nudges}


def recent_rows(db: Session, viewer: Viewer, limit: int = 50) -> list[dict[str, Any]]:
    """Ended sessions of the last RECENT_DAYS, newest first."""
    end = datetime.now(UTC)
    rows = list_sessions(db, viewer, end - timedelta(days=RECENT_DAYS), end, limit=limit * 4)
    return [_list_row(r) for r in rows if r.ended_at is not None][:limit]


# --- fidelity (no text) --------------------------------------------------------------------------------
def window_bounds(window: Window, ending: date | None) -> tuple[date, datetime, datetime]:
    """``ending`` is the window's last day (UTC, default today); a week is 7 days, a month 30."""
    ending = ending or datetime.now(UTC).date()
    end = datetime.combine(ending + timedelta(days=1), time(0), UTC)
    return ending, end - timedelta(days=WINDOW_DAYS[window]), end


def _metrics(key: str | None, f: Fidelity) -> dict[str, Any]:
    mix = [{**_category(c), "title": CATEGORY_TITLES[c], "count": f.category_assignments.get(c, 0),
            "sessions": f.category_sessions.get(c, 0)} for c in HOMEWORK_CLASSES if f.category_assignments.get(c)]
    return {"key": key, **f.as_dict(), "category_mix": mix,
            "homework_rate_label": rate_label(f.with_homework, f.completed),
            "review_rate_label": rate_label(f.prior_reviewed, f.prior_homework),
            "follow_through_label": rate_label(f.homework_after_nudge, f.nudged_no_homework),
            "homework_percent": percent(f.with_homework, f.completed),
            "review_percent": percent(f.prior_reviewed, f.prior_homework),
            "follow_through_percent": percent(f.homework_after_nudge, f.nudged_no_homework)}


def programs(db: Session, viewer: Viewer) -> list[str]:
    return [viewer.program_id] if viewer.role == "supervisor" and viewer.program_id else []


def fidelity_view(db: Session, viewer: Viewer, window: Window, ending: date | None,
                  program: str | None) -> dict[str, Any]:
    ending, start, end = window_bounds(window, ending)
    by_therapist = fidelity_report(db, viewer, start, end, "therapist", program_id=program)
    by_program = fidelity_report(db, viewer, start, end, "program", program_id=program)
    trend = trend_chart(db, viewer, TREND_WEEKS, ending, program)
    query = f"weeks={TREND_WEEKS}&ending={ending.isoformat()}" + (f"&program={program}" if program else "")
    return {"window": window, "ending": ending.isoformat(), "program": program,
            "start": start.isoformat(), "end": end.isoformat(),
            "start_label": start.date().isoformat(), "end_label": ending.isoformat(),
            "total": _metrics(None, by_therapist.total),
            "sessions": [_list_row(r) for r in list_sessions(db, viewer, start, end, program_id=program,
                                                             limit=WINDOW_SESSIONS)],
            "therapists": [_metrics(g.key, g.fidelity) for g in by_therapist.groups],
            "programs": [_metrics(g.key, g.fidelity) for g in by_program.groups],
            "trend": trend["table"], "trend_url": f"/api/fidelity/trend?{query}"}


def trend_chart(db: Session, viewer: Viewer, weeks: int, ending: date | None, program: str | None
                ) -> dict[str, Any]:
    """Weekly homework-assignment rate over the ``weeks`` ISO weeks up to ``ending``: the viewer's whole
    scope, and one series per therapist (the first few). Rates and counts only."""
    ending = ending or datetime.now(UTC).date()
    end = datetime.combine(ending + timedelta(days=1), time(0), UTC)
    last_monday = ending - timedelta(days=ending.weekday())
    start = datetime.combine(last_monday - timedelta(weeks=weeks - 1), time(0), UTC)
    overall = fidelity_report(db, viewer, start, end, "therapist", program_id=program)
    labels = [w.week_start.isoformat() for w in overall.weeks]
    series: list[dict[str, Any]] = [{"label": "all sessions" if viewer.role != "therapist" else "my sessions", "overall": True,
               "rates": [w.fidelity.assignment_rate for w in overall.weeks]}]
    if viewer.role != "therapist":
        for g in [g for g in overall.groups if g.key is not None][:MAX_TREND_THERAPISTS]:
            rep = fidelity_report(db, viewer, start, end, "therapist", therapist_id=g.key, program_id=program)
            series.append({"label": g.key, "overall": False, "rates": [w.fidelity.assignment_rate for w in rep.weeks]})
    table = [{"week": w.week_start.isoformat(), "week_label": w.week_start.isoformat(),
              "completed": w.fidelity.completed, "with_homework": w.fidelity.with_homework,
              "rate": w.fidelity.assignment_rate, "rate_label": rate_label(w.fidelity.with_homework, w.fidelity.completed)}
             for w in overall.weeks]
    return {"weeks": labels, "series": series, "table": table}
