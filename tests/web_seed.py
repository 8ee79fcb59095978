"""A store filled through the store's own write API (``store.ingest.apply``, what the sink calls) for the
web tests and the screenshots: two programs, three therapists, live and ended sessions, nudges, a client
with consecutive sessions, and eight weeks of history for the trend. Every quote is written for these
tests (no corpus text). Times are relative to an explicit ``now``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from homework_monitor.store.db import Store
from homework_monitor.store.ingest import apply
from homework_monitor.stream.aggregation import charting_note
from homework_monitor.stream.nudges import MESSAGES
from homework_monitor.stream.schemas import (
    Assignment,
    HomeworkEvent,
    Nudge,
    SessionOpened,
    SessionSummary,
    stable_id,
)

MODEL = "seed-model/1"
QUOTES = {
    "practice": "Between now and next week, try the four-count breathing twice a day, morning and evening.",
    "journal": "Each night, jot down one moment the worry showed up and what you told yourself then.",
    "take_action": "Before we meet again, call the clinic about the evening group and ask about times.",
    "learn": "Read the two pages on sleep pressure I gave you, and bring one question about them.",
}
NO_HOMEWORK_MESSAGE = MESSAGES["no_homework_yet"]
REVIEW_MESSAGE = MESSAGES["review_previous"]


@dataclass
class Seeded:
    """Ids of the seeded sessions by role in the tests, and every quote written (for leak checks)."""
    now: datetime
    live_with_homework: str = "s-live-t01"
    live_no_homework: str = "s-live-t01-quiet"
    ended_t01: str = "s-ended-t01"
    previous_t01: str = "s-prev-t01"
    ended_t08: str = "s-ended-t08"
    other_program: str = "s-t02-mood"
    quotes: set[str] = field(default_factory=set)
    events: dict[str, list[str]] = field(default_factory=dict)


def _epoch(t: datetime) -> float:
    return t.timestamp()


class Seeder:
    def __init__(self, store: Store, seeded: Seeded):
        self.store, self.s = store, seeded

    def apply(self, *messages) -> None:
        with self.store.session() as db:
            for m in messages:
                apply(db, m)

    def open(self, sid: str, therapist: str, client: str, program: str, started: datetime,
             scheduled: int = 50) -> None:
        self.apply(SessionOpened(session_id=sid, therapist_id=therapist, client_id=client, program_id=program,
                                 scheduled_minutes=scheduled, started_at=_epoch(started), start_s=0.0,
                                 emitted_at=_epoch(started)))

    def event(self, sid: str, therapist: str, client: str, program: str, started: datetime, category: str,
              minute: float, turn: int, confidence: float = 0.9, quote: str | None = None) -> Assignment:
        quote = quote or QUOTES[category]
        self.s.quotes.add(quote)
        scores = {c: 0.02 for c in ("none", "practice", "take_action", "journal", "learn")}
        scores[category] = confidence
        ev = HomeworkEvent(event_id=stable_id("event", sid, turn, MODEL), session_id=sid, therapist_id=therapist,
                           program_id=program, client_id=client, turn=turn, category=category,
                           confidence=confidence, scores=scores, quote=quote, start_s=minute * 60,
                           trigger_seq=turn + 1, emitted_at=_epoch(started + timedelta(minutes=minute)),
                           model_version=MODEL)
        self.apply(ev)
        self.s.events.setdefault(sid, []).append(ev.event_id)
        return Assignment(turn=turn, category=category, confidence=confidence, start_s=minute * 60, quote=quote)

    def nudge(self, sid: str, therapist: str, client: str, program: str, started: datetime, rule: str,
              minute: float, previous_session_id: str | None = None,
              previous: list[Assignment] | None = None) -> None:
        message = NO_HOMEWORK_MESSAGE if rule == "no_homework_yet" else REVIEW_MESSAGE
        self.apply(Nudge(nudge_id=stable_id("nudge", sid, rule), session_id=sid, therapist_id=therapist,
                         client_id=client, program_id=program, rule=rule, message=message,
                         session_time_s=minute * 60, previous_session_id=previous_session_id,
                         previous_assignments=previous or [],
                         emitted_at=_epoch(started + timedelta(minutes=minute))))

    def summary(self, sid: str, therapist: str, client: str, program: str, started: datetime,
                assignments: list[Assignment], minutes: float = 50, previous_session_id: str | None = None,
                previous: list[Assignment] | None = None, reviewed: bool | None = None) -> None:
        self.apply(SessionSummary(
            summary_id=stable_id("summary", sid, MODEL), session_id=sid, therapist_id=therapist, client_id=client,
            program_id=program, scheduled_minutes=50, started_at=_epoch(started),
            homework_assigned=bool(assignments), categories=sorted({a.category for a in assignments}),
            assignments=assignments, note=charting_note(assignments, 0.0), previous_session_id=previous_session_id,
            previous_homework=previous or [], previous_homework_reviewed=reviewed, n_utterances=120,
            n_microdialogues=55, duration_s=minutes * 60, emitted_at=_epoch(started + timedelta(minutes=minutes)),
            model_version=MODEL))

    def session(self, sid: str, therapist: str, client: str, program: str, started: datetime,
                categories: list[str], *, ended: bool = True, nudge_no_homework: bool = False,
                after_nudge: list[str] | None = None, previous_session_id: str | None = None,
                previous: list[Assignment] | None = None, reviewed: bool | None = None) -> list[Assignment]:
        self.open(sid, therapist, client, program, started)
        if previous:
            self.nudge(sid, therapist, client, program, started, "review_previous", 0.5, previous_session_id,
                       previous)
        done = [self.event(sid, therapist, client, program, started, c, 12 + 6 * i, 20 + 4 * i)
                for i, c in enumerate(categories)]
        if nudge_no_homework:
            self.nudge(sid, therapist, client, program, started, "no_homework_yet", 40)
            done += [self.event(sid, therapist, client, program, started, c, 43 + i, 90 + 2 * i)
                     for i, c in enumerate(after_nudge or [])]
        if ended:
            self.summary(sid, therapist, client, program, started, done, previous_session_id=previous_session_id,
                         previous=previous, reviewed=reviewed)
        return done


# Weekly history: (weeks ago, therapist, homework?) for t-01 and t-08 in cbt-anxiety; rates climb.
HISTORY = [(w, t, hw) for w in range(1, 8) for t, hw in
           (("t-01", True), ("t-01", w % 2 == 0), ("t-01", w < 4), ("t-08", w % 3 != 0), ("t-08", w < 3))]


def seed(store: Store, now: datetime | None = None) -> Seeded:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    s = Seeded(now=now)
    sd = Seeder(store, s)
    anx = "cbt-anxiety"
    # Client c-201's previous session (8 days ago) had homework; this week's ended one reviewed it.
    prev = sd.session(s.previous_t01, "t-01", "c-201", anx, now - timedelta(days=8), ["practice"])
    sd.session(s.ended_t01, "t-01", "c-201", anx, now - timedelta(days=1), ["practice", "journal"],
               previous_session_id=s.previous_t01, previous=prev, reviewed=True)
    # Live: c-203's session with two detections so far and a review nudge; c-204's without homework yet.
    last = sd.session("s-prev-t01-c203", "t-01", "c-203", anx, now - timedelta(days=7, hours=2), ["take_action"])
    sd.session(s.live_with_homework, "t-01", "c-203", anx, now - timedelta(minutes=24), ["practice", "journal"],
               ended=False, previous_session_id="s-prev-t01-c203", previous=last)
    sd.session(s.live_no_homework, "t-01", "c-204", anx, now - timedelta(minutes=41), [], ended=False,
               nudge_no_homework=True)
    # t-08: one session nudged and followed through, one nudged without homework.
    sd.session(s.ended_t08, "t-08", "c-208", anx, now - timedelta(days=2), [], nudge_no_homework=True,
               after_nudge=["take_action"])
    sd.session("s-ended-t08-b", "t-08", "c-209", anx, now - timedelta(days=3), [], nudge_no_homework=True)
    # Another program: neither therapist1 nor the cbt-anxiety supervisor may see it.
    sd.session(s.other_program, "t-02", "c-302", "cbt-mood", now - timedelta(days=1, hours=3), ["learn"])
    sd.session("s-t02-live", "t-02", "c-303", "cbt-mood", now - timedelta(minutes=10), ["learn"], ended=False)
    for i, (weeks_ago, therapist, hw) in enumerate(HISTORY):
        started = now - timedelta(weeks=weeks_ago, hours=3 + i)
        sd.session(f"s-hist-{i:02d}", therapist, f"c-h{i:02d}", anx, started,
                   [("practice", "journal", "take_action", "learn")[i % 4]] if hw else [])
    return s
