"""Cross-session follow-up: each client's homework history, and the previous session of a new one. Pure.

The history of a client (``client_id``) is a short list of their latest sessions, each with the homework
assigned in it, newest last. The worker keeps it in a Faust GlobalTable fed from the session summaries
(stream/app.py, docs/NUDGES.md); ``homework-monitor summarize`` keeps it in a dict, processing sessions in
file order. Both use these functions, so the offline and live summaries agree.

A session looks its client up when its client becomes known, and again with each message until its first
exchange is complete (``with_previous``); what it found stays in its own state: later changes to the
history (its own summary among them, on a replay) do not change it. A session is recorded in the history from its summary (``record_session``).
"""
from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from .schemas import Assignment, SessionSummary
from .windowing import SessionState, evolve

# Sessions kept per client. The previous session is the newest one that is not the session asking: after
# a crash a session can be replayed after its own summary was recorded, so two are kept.
HISTORY_SESSIONS = 2


class PastSession(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    session_id: str
    assignments: list[Assignment]


class ClientHistory(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    sessions: list[PastSession]


def history_of(value: Mapping | ClientHistory | None) -> ClientHistory | None:
    """A stored history (the table holds JSON) or None."""
    if value is None or isinstance(value, ClientHistory):
        return value
    return ClientHistory.model_validate(value)


def record_session(history: ClientHistory | None, summary: SessionSummary) -> ClientHistory:
    """The client's history with this session as its newest (a redelivered summary replaces its entry
    in place, so recording is idempotent)."""
    entry = PastSession(session_id=summary.session_id, assignments=list(summary.assignments))
    sessions = list(history.sessions) if history else []
    for i, s in enumerate(sessions):
        if s.session_id == entry.session_id:
            sessions[i] = entry
            break
    else:
        sessions.append(entry)
    return ClientHistory(sessions=sessions[-HISTORY_SESSIONS:])


def previous_session(history: ClientHistory | None, session_id: str) -> PastSession | None:
    """The client's newest session other than ``session_id``."""
    if history is None:
        return None
    for s in reversed(history.sessions):
        if s.session_id != session_id:
            return s
    return None


def needs_previous(state: SessionState) -> bool:
    """The session knows its client and has not settled the client's previous session yet."""
    return not state.previous_checked and state.client_id is not None and state.consent is not False


def with_previous(state: SessionState, history: ClientHistory | None) -> SessionState:
    """Record the client's previous session (and its homework) in the session's state.

    Settled once found, or once the session's first exchange (microdialogue) is complete: until then
    each message looks again, so a previous summary still on its way (a worker behind its input) is not
    missed, and every turn of the session is read for reviews."""
    if not needs_previous(state):
        return state
    prev = previous_session(history, state.session_id)
    if prev is None:
        return evolve(state, previous_checked=True) if state.n_microdialogues > 0 else state
    return evolve(state, previous_checked=True, previous_session_id=prev.session_id,
                  previous_homework=tuple(prev.assignments))

