"""In-session nudges to the therapist: pure rules over a session's state and an explicit clock.

Three rules (docs/NUDGES.md), each switched on or off by ``HWM_NUDGE_RULES`` and fired at most once per
session: the state remembers the rules it fired (``SessionState.nudges_fired``), so a redelivered or
replayed message never fires one twice, and ``nudge_id = stable_id("nudge", session_id, rule)`` gives a
re-sent nudge (a crash between sending and storing) the same id.

- ``review_previous``: at session start, when the client's previous session had homework; carries its
  categories and quotes (also when the first batch of the session already reviewed it).
- ``not_yet_reviewed``: that homework exists and no turn reviewed it within the first M minutes
  (``HWM_NUDGE_REVIEW_WITHIN_MIN``).
- ``no_homework_yet``: no homework detected by N minutes before the scheduled end
  (``HWM_NUDGE_NO_HOMEWORK_BEFORE_END_MIN``; ``scheduled_minutes`` from the session's messages, else
  ``HWM_DEFAULT_SCHEDULED_MINUTES``). In a session no longer than 2N minutes it fires at half time, not
  at its first minute.

**Session time.** The rules read the session's own clock: the last known offset (``end_s`` or
``start_s`` of its latest utterance, seconds from the start of the recording) plus the wall time since
that utterance arrived; with no offsets at all, the wall time since the session's first message. So a
rule falls due between utterances too: the worker's timer asks ``check_due`` every second and sends the
session a ``silence_check`` through its partition, whose processing fires the rule (stream/app.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import get_args

from .config import Settings
from .schemas import Nudge, NudgeRule, stable_id
from .windowing import SessionState, evolve

RULES: tuple[NudgeRule, ...] = get_args(NudgeRule)

# Fixed wording per rule: no transcript text ever goes into a message.
MESSAGES: dict[str, str] = {
    "review_previous": "Last session's homework is listed here: consider reviewing it with the client.",
    "not_yet_reviewed": "Last session's homework has not been reviewed yet.",
    "no_homework_yet": "No homework assigned yet, and the session is nearing its scheduled end.",
}


@dataclass(frozen=True)
class NudgeConfig:
    default_scheduled_minutes: int = 50
    no_homework_before_end_min: float = 10.0  # N
    review_within_min: float = 10.0  # M
    rules: frozenset[str] = field(default_factory=lambda: frozenset(RULES))

    @classmethod
    def from_settings(cls, settings: Settings) -> NudgeConfig:
        return cls(default_scheduled_minutes=settings.default_scheduled_minutes,
                   no_homework_before_end_min=settings.nudge_no_homework_before_end_min,
                   review_within_min=settings.nudge_review_within_min, rules=frozenset(settings.nudge_rules))


def scheduled_minutes(state: SessionState, cfg: NudgeConfig) -> int:
    return state.scheduled_minutes if state.scheduled_minutes else cfg.default_scheduled_minutes


def session_time_s(state: SessionState, now: float) -> float | None:
    """Seconds into the session at wall-clock ``now`` (module docstring); None before its first message."""
    if state.last_time_s is not None:
        since = now - state.last_activity_at if state.last_activity_at is not None else 0.0
        return state.last_time_s + max(0.0, since)
    if state.started_at is not None:
        return max(0.0, now - state.started_at)
    return None


def no_homework_due_s(state: SessionState, cfg: NudgeConfig) -> float:
    """When "no homework yet" falls due, in seconds into the session."""
    minutes = scheduled_minutes(state, cfg)
    return 60.0 * max(minutes - cfg.no_homework_before_end_min, minutes / 2)


def due_rules(state: SessionState, now: float, cfg: NudgeConfig) -> list[NudgeRule]:
    """The rules whose condition holds at ``now`` and that have not fired in this session."""
    if state.ended or state.consent is False:
        return []
    t = session_time_s(state, now)
    due: list[NudgeRule] = []
    if state.previous_homework:
        due.append("review_previous")
        if not state.reviews and t is not None and t >= 60.0 * cfg.review_within_min:
            due.append("not_yet_reviewed")
    if not state.assignments and t is not None and t >= no_homework_due_s(state, cfg):
        due.append("no_homework_yet")
    return [r for r in due if r in cfg.rules and r not in state.nudges_fired]


def fire(state: SessionState, now: float, cfg: NudgeConfig,
         emitted_at: float | None = None) -> tuple[SessionState, list[Nudge]]:
    """Fire the rules due at ``now``: the nudges (sent at ``emitted_at``, default ``now``), and the state
    that remembers them."""
    rules = due_rules(state, now, cfg)
    if not rules:
        return state, []
    t = session_time_s(state, now)
    emitted_at = now if emitted_at is None else emitted_at
    nudges = [Nudge(nudge_id=stable_id("nudge", state.session_id, rule), session_id=state.session_id,
                    therapist_id=state.therapist_id, client_id=state.client_id, program_id=state.program_id,
                    rule=rule, message=MESSAGES[rule], session_time_s=None if t is None else round(t, 3),
                    previous_session_id=state.previous_session_id if rule != "no_homework_yet" else None,
                    previous_assignments=list(state.previous_homework) if rule != "no_homework_yet" else [],
                    emitted_at=emitted_at)
              for rule in rules]
    return evolve(state, nudges_fired=state.nudges_fired + tuple(rules)), nudges


def fire_before_end(state: SessionState, cfg: NudgeConfig, emitted_at: float) -> tuple[SessionState, list[Nudge]]:
    """A session that ended in the batch being processed: the rules that were due on its own clock before
    it ended (its last utterance's offset, or its end's), as a worker that kept up would have fired them.
    A worker behind its input (or a fast replay) gets the end in the same batch as the utterance that made
    a rule due; nothing is lost, the nudge arrives late."""
    at = state.last_activity_at if state.last_activity_at is not None else emitted_at
    fired, nudges = fire(evolve(state, ended=False), at, cfg, emitted_at)
    return evolve(fired, ended=state.ended), nudges


def check_due(state: SessionState, now: float, cfg: NudgeConfig) -> bool:
    """A time-based rule is due: the worker's timer sends the session a check (a ``silence_check``)."""
    return any(r != "review_previous" for r in due_rules(state, now, cfg))
