"""Per-session consent: what the worker does with a message, given the session's consent. Pure.

A ``session_start`` with ``consent: false`` declines monitoring: the worker processes and stores
nothing of that session. What it keeps is a *declined marker* (the session id, ``consent=False``, and
nothing else: no text, no therapist or client id) so that the session's later messages are recognised
and dropped; the marker is a retired session's tombstone and leaves the table after
``HWM_RETIRED_SESSION_GRACE_S`` like any other. Dropped messages are counted, never dead-lettered (a
dead letter would keep an excerpt of the text).

With ``HWM_REQUIRE_CONSENT=true`` a session is processed only after a ``session_start`` with
``consent: true``: a session whose first message is anything else is declined the same way.

A session already under way when its declining ``session_start`` arrives (a producer that sends it
late) is declined from then on: its state, with the text windowed so far, is replaced by the marker and
nothing more is emitted for it; what was emitted before cannot be recalled (docs/NUDGES.md).
"""
from __future__ import annotations

from typing import Literal

from .schemas import SessionStart
from .windowing import SessionState

Verdict = Literal["process", "decline", "drop"]


def declined(state: SessionState | None) -> bool:
    return state is not None and state.consent is False


def consent_verdict(state: SessionState | None, msg, require_consent: bool) -> Verdict:
    """``process`` the message; ``decline`` the session (store the marker, count it once); or ``drop``
    the message of a session already declined."""
    if declined(state):
        return "drop"
    if isinstance(msg, SessionStart):
        if msg.consent is False or (require_consent and msg.consent is None and not _consented(state)):
            return "decline"
        return "process"
    if require_consent and not _consented(state):
        return "decline"
    return "process"


def _consented(state: SessionState | None) -> bool:
    return state is not None and state.consent is True


def declined_marker(session_id: str) -> SessionState:
    """All that is kept of a declined session: its id, so later messages are dropped; retired (ended)
    so the timer never looks at it and it expires like a tombstone."""
    return SessionState(session_id=session_id, consent=False, ended=True)
