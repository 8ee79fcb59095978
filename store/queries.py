"""The read API of the clinicians' surfaces, and clinician feedback. No web imports: the web app calls
these inside ``with store.session() as db:`` and renders the typed results.

Every function takes the ``Viewer`` and returns only what that viewer may see (``access.scope``).
Aggregates (``fidelity_report``, ``live_sessions``, ``list_sessions``) carry ids, counts and times,
never text; quotes and notes appear only in ``session_detail``.

Definitions (docs/STORE.md), over the sessions whose ``started_at`` lies in ``[start, end)``:

* sessions: all of them, live or ended; completed: those with a summary;
* assignment rate = completed sessions with homework / completed sessions;
* category mix: per category, completed sessions whose summary has it, and its number of assignments;
* review rate = completed sessions whose previous session had homework and that reviewed it
  (``previous_homework_reviewed``) / completed sessions whose previous session had homework;
* nudge follow-through = completed sessions with a *no homework yet* nudge and a homework event emitted at
  or after it / completed sessions with that nudge;
* weeks: the same figures per ISO week (Monday 00:00 UTC), every week that overlaps the window.
Rates are None when their denominator is 0.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import Session

from homework_monitor.stream.schemas import HOMEWORK_CLASSES

from .access import Viewer, audit, can_view_session, now_utc, scope
from .ingest import upsert_insert
from .models import AssignmentRow, FeedbackRow, HomeworkEventRow, NudgeRow, SessionRow

GroupBy = Literal["therapist", "program"]
Vote = Literal["up", "down"]
NO_HOMEWORK_YET = "no_homework_yet"
CATEGORIES: tuple[str, ...] = tuple(HOMEWORK_CLASSES)
# A session without a summary this long after its start is no longer shown as live (its worker lost it).
LIVE_MAX_AGE = timedelta(hours=12)


def _rate(num: int, den: int) -> float | None:
    return num / den if den else None


# --- supervisor view: fidelity ---------------------------------------------------------------------
@dataclass(frozen=True)
class Fidelity:
    sessions: int
    completed: int
    with_homework: int
    category_sessions: dict[str, int]
    category_assignments: dict[str, int]
    prior_homework: int
    prior_reviewed: int
    nudged_no_homework: int
    homework_after_nudge: int

    @property
    def assignment_rate(self) -> float | None:
        return _rate(self.with_homework, self.completed)

    @property
    def review_rate(self) -> float | None:
        return _rate(self.prior_reviewed, self.prior_homework)

    @property
    def nudge_follow_through(self) -> float | None:
        return _rate(self.homework_after_nudge, self.nudged_no_homework)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict, rates included (for the web's JSON endpoints and charts)."""
        return {"sessions": self.sessions, "completed": self.completed, "with_homework": self.with_homework,
                "assignment_rate": self.assignment_rate, "category_sessions": dict(self.category_sessions),
                "category_assignments": dict(self.category_assignments),
                "prior_homework": self.prior_homework, "prior_reviewed": self.prior_reviewed,
                "review_rate": self.review_rate, "nudged_no_homework": self.nudged_no_homework,
                "homework_after_nudge": self.homework_after_nudge,
                "nudge_follow_through": self.nudge_follow_through}


@dataclass(frozen=True)
class GroupFidelity:
    key: str | None  # the therapist_id or program_id (None: sessions that did not carry one)
    fidelity: Fidelity


@dataclass(frozen=True)
class WeekFidelity:
    week_start: date  # Monday of the ISO week (UTC)
    fidelity: Fidelity


@dataclass(frozen=True)
class FidelityReport:
    start: datetime
    end: datetime
    group_by: GroupBy
    total: Fidelity
    groups: list[GroupFidelity]  # sorted by key (None last)
    weeks: list[WeekFidelity]  # the total per week, every week overlapping [start, end), oldest first


@dataclass
class _Tally:
    sessions: int = 0
    completed: int = 0
    with_homework: int = 0
    category_sessions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    category_assignments: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CATEGORIES, 0))
    prior_homework: int = 0
    prior_reviewed: int = 0
    nudged_no_homework: int = 0
    homework_after_nudge: int = 0

    def add(self, fact: Any, cats: dict[str, int]) -> None:
        self.sessions += 1
        if fact.summary_id is None:
            return  # live (or lost before its summary): counted as a session, nothing more
        self.completed += 1
        self.with_homework += bool(fact.homework_assigned)
        for cat, n in cats.items():
            self.category_sessions[cat] += 1
            self.category_assignments[cat] += n
        if fact.previous_homework_assigned:
            self.prior_homework += 1
            self.prior_reviewed += bool(fact.previous_homework_reviewed)
        if fact.nudged:
            self.nudged_no_homework += 1
            self.homework_after_nudge += bool(fact.after_nudge)

    def freeze(self) -> Fidelity:
        return Fidelity(self.sessions, self.completed, self.with_homework, dict(self.category_sessions),
                        dict(self.category_assignments), self.prior_homework, self.prior_reviewed,
                        self.nudged_no_homework, self.homework_after_nudge)


def _aware(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError("naive datetime: pass timezone-aware (UTC) times")
    return t.astimezone(UTC)


def week_start(t: datetime) -> date:
    d = _aware(t).date()
    return d - timedelta(days=d.weekday())


def _window(viewer: Viewer, start: datetime, end: datetime, therapist_id: str | None, program_id: str | None):
    cond = [scope(viewer), SessionRow.started_at >= _aware(start), SessionRow.started_at < _aware(end)]
    if therapist_id is not None:
        cond.append(SessionRow.therapist_id == therapist_id)
    if program_id is not None:
        cond.append(SessionRow.program_id == program_id)
    return and_(*cond)


def fidelity_report(db: Session, viewer: Viewer, start: datetime, end: datetime, group_by: GroupBy = "therapist",
                    *, therapist_id: str | None = None, program_id: str | None = None) -> FidelityReport:
    """The supervisor view's figures for the sessions ``viewer`` may see that started in ``[start, end)``,
    optionally narrowed to one therapist / program: the total, one row per therapist (or program), and
    the total per week."""
    where = _window(viewer, start, end, therapist_id, program_id)
    nudge = NudgeRow.__table__.alias("n")
    event = HomeworkEventRow.__table__.alias("e")
    nudged = exists().where(nudge.c.session_id == SessionRow.session_id, nudge.c.rule == NO_HOMEWORK_YET)
    after_nudge = exists().where(nudge.c.session_id == SessionRow.session_id, nudge.c.rule == NO_HOMEWORK_YET,
                                 event.c.session_id == SessionRow.session_id,
                                 event.c.emitted_at >= nudge.c.emitted_at)
    facts = db.execute(select(
        SessionRow.session_id, SessionRow.therapist_id, SessionRow.program_id, SessionRow.started_at,
        SessionRow.summary_id, SessionRow.homework_assigned, SessionRow.previous_homework_assigned,
        SessionRow.previous_homework_reviewed, nudged.label("nudged"), after_nudge.label("after_nudge"),
    ).where(where)).all()
    cats: dict[str, dict[str, int]] = defaultdict(dict)
    for sid, cat, n in db.execute(
            select(AssignmentRow.session_id, AssignmentRow.category, func.count())
            .join(SessionRow, SessionRow.session_id == AssignmentRow.session_id)
            .where(where, SessionRow.summary_id.is_not(None))
            .group_by(AssignmentRow.session_id, AssignmentRow.category)):
        cats[sid][cat] = int(n)

    total = _Tally()
    groups: dict[str | None, _Tally] = defaultdict(_Tally)
    weeks: dict[date, _Tally] = {}
    w, last = week_start(start), week_start(_aware(end) - timedelta(microseconds=1))
    while w <= last:
        weeks[w] = _Tally()
        w += timedelta(days=7)
    for f in facts:
        c = cats.get(f.session_id, {})
        total.add(f, c)
        groups[f.therapist_id if group_by == "therapist" else f.program_id].add(f, c)
        weeks[week_start(f.started_at)].add(f, c)
    ordered = sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
    return FidelityReport(start=_aware(start), end=_aware(end), group_by=group_by, total=total.freeze(),
                          groups=[GroupFidelity(k, t.freeze()) for k, t in ordered],
                          weeks=[WeekFidelity(k, t.freeze()) for k, t in weeks.items()])


# --- session lists ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class SessionHeader:
    """Who and when: what every session row shows (ids only, no text)."""
    session_id: str
    therapist_id: str | None
    client_id: str | None
    program_id: str | None
    scheduled_minutes: int | None
    started_at: datetime


@dataclass(frozen=True)
class LiveSession(SessionHeader):
    elapsed_s: float
    homework_count: int  # homework events so far
    categories: list[str]  # their categories, sorted
    nudges: list[str]  # rules of the nudges sent, in the order sent


def live_sessions(db: Session, viewer: Viewer, now: datetime | None = None,
                  max_age: timedelta = LIVE_MAX_AGE) -> list[LiveSession]:
    """Sessions in progress (no summary yet, started within ``max_age``), oldest first."""
    now = _aware(now or now_utc())
    rows = db.scalars(select(SessionRow).where(scope(viewer), SessionRow.summary_id.is_(None),
                                               SessionRow.started_at >= now - max_age)
                      .order_by(SessionRow.started_at, SessionRow.session_id)).all()
    ids = [r.session_id for r in rows]
    events: dict[str, list[str]] = defaultdict(list)
    nudges: dict[str, list[str]] = defaultdict(list)
    if ids:
        for sid, cat in db.execute(select(HomeworkEventRow.session_id, HomeworkEventRow.category)
                                   .where(HomeworkEventRow.session_id.in_(ids))):
            events[sid].append(cat)
        for sid, rule in db.execute(select(NudgeRow.session_id, NudgeRow.rule).where(NudgeRow.session_id.in_(ids))
                                    .order_by(NudgeRow.emitted_at, NudgeRow.nudge_id)):
            nudges[sid].append(rule)
    return [LiveSession(r.session_id, r.therapist_id, r.client_id, r.program_id, r.scheduled_minutes, r.started_at,
                        max(0.0, (now - r.started_at).total_seconds()), len(events[r.session_id]),
                        sorted(set(events[r.session_id])), nudges[r.session_id]) for r in rows]


@dataclass(frozen=True)
class SessionListItem:
    session_id: str
    therapist_id: str | None
    client_id: str | None
    program_id: str | None
    started_at: datetime
    ended_at: datetime | None  # None: live
    homework_assigned: bool | None  # None: live
    categories: list[str]
    n_nudges: int


def list_sessions(db: Session, viewer: Viewer, start: datetime, end: datetime, *, therapist_id: str | None = None,
                  program_id: str | None = None, limit: int = 500) -> list[SessionListItem]:
    """Sessions that started in ``[start, end)`` (newest first), for drill-down lists. No text."""
    n_nudges = (select(func.count()).select_from(NudgeRow).where(NudgeRow.session_id == SessionRow.session_id)
                .scalar_subquery())
    rows = db.execute(select(SessionRow, n_nudges).where(_window(viewer, start, end, therapist_id, program_id))
                      .order_by(SessionRow.started_at.desc(), SessionRow.session_id).limit(limit)).all()
    return [SessionListItem(r.session_id, r.therapist_id, r.client_id, r.program_id, r.started_at, r.ended_at,
                            r.homework_assigned, list(r.categories or []), int(n)) for r, n in rows]


# --- one session -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class AssignmentView:
    turn: int
    category: str
    confidence: float
    start_s: float | None
    quote: str


@dataclass(frozen=True)
class Detection:
    """A live homework event, with the clinicians' votes on it."""
    event_id: str
    turn: int
    category: str
    confidence: float
    start_s: float | None
    quote: str
    emitted_at: datetime
    votes_up: int
    votes_down: int
    my_vote: Vote | None  # the viewer's own vote


@dataclass(frozen=True)
class NudgeView:
    nudge_id: str
    rule: str
    message: str
    session_time_s: float | None
    emitted_at: datetime
    previous_session_id: str | None
    previous_assignments: list[AssignmentView]


@dataclass(frozen=True)
class ReviewView:
    turn: int
    start_s: float | None
    quote: str
    source: str


@dataclass(frozen=True)
class SessionDetail(SessionHeader):
    ended_at: datetime | None
    live: bool
    elapsed_s: float  # now - started_at while live; ended_at - started_at after
    homework_assigned: bool | None  # the summary's; None while live
    categories: list[str]  # the summary's, or the detections' so far while live
    note: str | None  # the charting note (None while live)
    detections: list[Detection]  # in session order
    assignments: list[AssignmentView]  # the summary's final list (empty while live)
    nudges: list[NudgeView]  # in the order sent
    previous_session_id: str | None
    previous_homework: list[AssignmentView]
    previous_homework_reviewed: bool | None
    reviews: list[ReviewView]
    n_utterances: int | None
    duration_s: float | None
    model_version: str | None


def _assignment(d: dict[str, Any]) -> AssignmentView:
    return AssignmentView(int(d["turn"]), str(d["category"]), float(d["confidence"]), d.get("start_s"),
                          str(d["quote"]))


def _votes(db: Session, event_ids: list[str], user_id: str) -> dict[str, tuple[int, int, Vote | None]]:
    out: dict[str, tuple[int, int, Vote | None]] = {}
    if not event_ids:
        return out
    rows = db.execute(select(FeedbackRow.event_id, FeedbackRow.user_id, FeedbackRow.vote)
                      .where(FeedbackRow.event_id.in_(event_ids))).all()
    for eid in event_ids:
        mine = [v for e, u, v in rows if e == eid and u == user_id]
        out[eid] = (sum(1 for e, _, v in rows if e == eid and v > 0), sum(1 for e, _, v in rows if e == eid and v < 0),
                    ("up" if mine[0] > 0 else "down") if mine else None)
    return out


def session_detail(db: Session, viewer: Viewer, session_id: str, now: datetime | None = None,
                   audit_action: str | None = "view_session") -> SessionDetail | None:
    """One session with its quotes, note, nudges and feedback; None when it does not exist or is out of
    ``viewer``'s scope (answer both the same way). Appends an audit record (``audit_action``; None for a
    refresh of a view already audited) in the caller's transaction."""
    row = db.scalars(select(SessionRow).where(SessionRow.session_id == session_id, scope(viewer))).first()
    if row is None:
        return None
    if audit_action is not None:
        audit(db, viewer.user_id, audit_action, session_id)
    now = _aware(now or now_utc())
    events = db.scalars(select(HomeworkEventRow).where(HomeworkEventRow.session_id == session_id)
                        .order_by(HomeworkEventRow.turn, HomeworkEventRow.event_id)).all()
    votes = _votes(db, [e.event_id for e in events], viewer.user_id)
    detections = [Detection(e.event_id, e.turn, e.category, e.confidence, e.start_s, e.quote, e.emitted_at,
                            *votes[e.event_id]) for e in events]
    assignments = [AssignmentView(a.turn, a.category, a.confidence, a.start_s, a.quote) for a in db.scalars(
        select(AssignmentRow).where(AssignmentRow.session_id == session_id).order_by(AssignmentRow.turn))]
    nudges = [NudgeView(n.nudge_id, n.rule, n.message, n.session_time_s, n.emitted_at, n.previous_session_id,
                        [_assignment(a) for a in n.previous_assignments]) for n in db.scalars(
        select(NudgeRow).where(NudgeRow.session_id == session_id).order_by(NudgeRow.emitted_at, NudgeRow.nudge_id))]
    live = row.summary_id is None
    end = now if live or row.ended_at is None else row.ended_at
    return SessionDetail(
        session_id=row.session_id, therapist_id=row.therapist_id, client_id=row.client_id,
        program_id=row.program_id, scheduled_minutes=row.scheduled_minutes, started_at=row.started_at,
        ended_at=row.ended_at, live=live, elapsed_s=max(0.0, (end - row.started_at).total_seconds()),
        homework_assigned=row.homework_assigned,
        categories=sorted({d.category for d in detections}) if live else list(row.categories or []),
        note=row.note, detections=detections, assignments=assignments, nudges=nudges,
        previous_session_id=row.previous_session_id,
        previous_homework=[_assignment(a) for a in row.previous_homework or []],
        previous_homework_reviewed=row.previous_homework_reviewed,
        reviews=[ReviewView(int(r["turn"]), r.get("start_s"), str(r["quote"]), str(r["source"]))
                 for r in row.reviews or []],
        n_utterances=row.n_utterances, duration_s=row.duration_s, model_version=row.model_version)


# --- clinician feedback ----------------------------------------------------------------------------
@dataclass(frozen=True)
class FeedbackTally:
    event_id: str
    votes_up: int
    votes_down: int
    my_vote: Vote | None


def record_feedback(db: Session, viewer: Viewer, event_id: str, vote: Vote | None,
                    now: datetime | None = None) -> FeedbackTally:
    """Set (or with None, withdraw) ``viewer``'s vote on a detection; one vote per user and event, the
    latest wins. Audited as ``feedback``. ``LookupError`` when the event does not exist or its session is
    out of scope (the same for both)."""
    session_id = db.scalar(select(HomeworkEventRow.session_id).where(HomeworkEventRow.event_id == event_id))
    if session_id is None or not can_view_session(db, viewer, session_id):
        raise LookupError("no such detection")
    if vote not in ("up", "down", None):
        raise ValueError("vote must be 'up', 'down' or None")
    at = _aware(now or now_utc())
    if vote is None:
        db.query(FeedbackRow).filter_by(event_id=event_id, user_id=viewer.user_id).delete()
    else:
        value = 1 if vote == "up" else -1
        stmt = upsert_insert(db, FeedbackRow).values(event_id=event_id, user_id=viewer.user_id, vote=value, at=at)
        db.execute(stmt.on_conflict_do_update(index_elements=["event_id", "user_id"],
                                              set_={"vote": value, "at": at}))
    audit(db, viewer.user_id, "feedback", session_id, at=at)
    up, down, mine = _votes(db, [event_id], viewer.user_id)[event_id]
    return FeedbackTally(event_id, up, down, mine)


# --- operations --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredCounts:
    """Row counts for operators and the demo (no scope: not for clinicians' views)."""
    sessions: int
    summaries: int
    events: int
    nudges: int


def stored_counts(db: Session) -> StoredCounts:
    return StoredCounts(
        sessions=int(db.scalar(select(func.count()).select_from(SessionRow)) or 0),
        summaries=int(db.scalar(select(func.count(SessionRow.summary_id))) or 0),
        events=int(db.scalar(select(func.count()).select_from(HomeworkEventRow)) or 0),
        nudges=int(db.scalar(select(func.count()).select_from(NudgeRow)) or 0))
