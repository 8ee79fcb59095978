"""Per-session windowing: utterances in, microdialogues out. Pure and deterministic.

A microdialogue is one therapist turn, the client turn that answers it, and up to N turns of context
before it (the unit of Peretz et al. 2023). Consecutive utterances of one speaker merge into a turn. A
turn only closes when the other speaker starts, so a therapist turn is paired when the client's reply
is followed by the next therapist utterance, when the silence limit passes, or at session end.

Time is passed in explicitly (``now``/``at``): the worker passes wall-clock arrival time, tests pass a
fake clock. State is a frozen dataclass that round-trips through JSON for the Faust table.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Literal, TypeVar

from homework_monitor.contract import Example

from .schemas import Assignment, Review, SessionEnd, SessionStart, SilenceCheck, Turn, Utterance

_Frozen = TypeVar("_Frozen")


_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _field_names(cls: type) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))
    return names


def evolve(obj: _Frozen, **changes) -> _Frozen:
    """``dataclasses.replace`` for the frozen state classes of the pure core, at a fraction of its cost.

    ``replace`` re-runs ``__init__``, which sets every field through ``object.__setattr__`` (27 of them
    for a ``SessionState``); the worker rebuilds states several times per utterance, and that was the
    largest single cost of its own work (``benchmarks/stream_path.py``). This copies the instance's
    ``__dict__`` instead, which is the same result for these classes: frozen dataclasses with no
    ``__post_init__``, no ``InitVar`` and no slots. Unknown names are refused, as ``replace`` does."""
    if not changes.keys() <= _field_names(type(obj)):
        raise TypeError(f"{type(obj).__name__} has no field(s) {sorted(changes.keys() - _field_names(type(obj)))}")
    new = object.__new__(type(obj))
    new.__dict__.update(obj.__dict__, **changes)
    return new


@dataclass(frozen=True)
class WindowTurn:
    speaker: Literal["therapist", "client"]
    text: str
    first_seq: int
    last_seq: int
    start_s: float | None
    end_s: float | None

    def extended(self, u: Utterance) -> WindowTurn:
        return evolve(self, text=f"{self.text} {u.text}".strip(), last_seq=u.seq,
                      end_s=u.end_s if u.end_s is not None else self.end_s)

    @classmethod
    def of(cls, u: Utterance) -> WindowTurn:
        return cls(u.speaker, u.text.strip(), u.seq, u.seq, u.start_s, u.end_s)

    @property
    def seqs(self) -> range:
        return range(self.first_seq, self.last_seq + 1)


@dataclass(frozen=True)
class Microdialogue:
    session_id: str
    context: tuple[WindowTurn, ...]
    therapist: WindowTurn
    client: WindowTurn | None
    closed_at: float  # clock value when it became complete (for latency)
    trigger_seq: int | None = None  # utterance whose arrival completed it; None: silence or end

    @property
    def turn(self) -> int:
        return self.therapist.first_seq

    def context_turns(self) -> list[Turn]:
        return [Turn(speaker=t.speaker, text=t.text) for t in self.context]

    def example(self) -> Example:
        """The model's input (the contract type): text only, no seq or timing."""
        return Example(therapist=self.therapist.text, client=self.client.text if self.client else None,
                       context=tuple((t.speaker, t.text) for t in self.context))


@dataclass(frozen=True)
class WindowConfig:
    context_turns: int = 3
    silence_flush_s: float = 8.0


def _turn_json(t: WindowTurn | None) -> dict | None:
    return None if t is None else {"speaker": t.speaker, "text": t.text, "first_seq": t.first_seq,
                                   "last_seq": t.last_seq, "start_s": t.start_s, "end_s": t.end_s}


@dataclass(frozen=True)
class SessionState:
    session_id: str
    therapist_id: str | None = None
    client_id: str | None = None
    program_id: str | None = None
    scheduled_minutes: int | None = None
    last_seq: int = -1
    n_utterances: int = 0
    n_microdialogues: int = 0
    history: tuple[WindowTurn, ...] = ()
    open_turn: WindowTurn | None = None
    pending_therapist: WindowTurn | None = None
    pending_context: tuple[WindowTurn, ...] = ()
    last_activity_at: float | None = None
    first_start_s: float | None = None
    last_time_s: float | None = None
    assignments: tuple[Assignment, ...] = ()
    ended: bool = False
    missing_utterances: int = 0
    # Consent (stream/consent.py): True/None as sent on session_start; False only on a declined
    # session's marker, which holds nothing else.
    consent: bool | None = None
    started_at: float | None = None  # wall clock when the worker saw the session's first message
    # Cross-session follow-up (stream/followup.py): looked up once the client is known.
    previous_checked: bool = False
    previous_session_id: str | None = None
    previous_homework: tuple[Assignment, ...] = ()
    reviews: tuple[Review, ...] = ()
    nudges_fired: tuple[str, ...] = ()  # rules already fired: each fires at most once per session

    def to_json(self) -> dict:
        # Field by field: dataclasses.asdict deep-copies every value recursively, and this runs once
        # per utterance (a tenth of the worker's time in benchmarks/stream_path.py).
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["history"] = [_turn_json(t) for t in self.history]
        d["pending_context"] = [_turn_json(t) for t in self.pending_context]
        d["open_turn"] = _turn_json(self.open_turn)
        d["pending_therapist"] = _turn_json(self.pending_therapist)
        d["nudges_fired"] = list(self.nudges_fired)
        for name in ("assignments", "previous_homework", "reviews"):
            d[name] = [a.model_dump() for a in getattr(self, name)]
        return d

    @classmethod
    def from_json(cls, d: dict) -> SessionState:
        def turn(x):
            return WindowTurn(**x) if x else None
        return cls(**{**d,
                      "history": tuple(WindowTurn(**t) for t in d["history"]),
                      "open_turn": turn(d["open_turn"]),
                      "pending_therapist": turn(d["pending_therapist"]),
                      "pending_context": tuple(WindowTurn(**t) for t in d["pending_context"]),
                      "assignments": tuple(Assignment(**a) for a in d["assignments"]),
                      # absent from states stored before the follow-up fields existed
                      "previous_homework": tuple(Assignment(**a) for a in d.get("previous_homework", ())),
                      "reviews": tuple(Review(**r) for r in d.get("reviews", ())),
                      "nudges_fired": tuple(d.get("nudges_fired", ()))})

    @property
    def waiting(self) -> bool:
        """True when a silence check could flush something."""
        return not self.ended and (self.pending_therapist is not None or (
            self.open_turn is not None and self.open_turn.speaker == "therapist"))


Outcome = Literal["ok", "duplicate", "late", "control"]


@dataclass(frozen=True)
class Step:
    state: SessionState
    microdialogues: tuple[Microdialogue, ...] = ()
    outcome: Outcome = "ok"
    ended_now: bool = False


def _close_open_turn(s: SessionState, cfg: WindowConfig, now: float) -> tuple[SessionState, list[Microdialogue]]:
    """Close the turn being accumulated; pair or flush therapist turns as a consequence."""
    turn, out = s.open_turn, list[Microdialogue]()
    if turn is None:
        return s, out
    history, pending, pending_ctx = s.history, s.pending_therapist, s.pending_context
    if turn.speaker == "therapist":
        if pending is not None:  # cannot happen with strict alternation, kept for safety
            out.append(Microdialogue(s.session_id, pending_ctx, pending, None, now))
            history += (pending,)
        pending, pending_ctx = turn, history[-cfg.context_turns:] if cfg.context_turns else ()
    elif pending is not None:
        out.append(Microdialogue(s.session_id, pending_ctx, pending, turn, now))
        history += (pending, turn)
        pending, pending_ctx = None, ()
    else:
        history += (turn,)
    keep = max(cfg.context_turns, 1)
    s = evolve(s, open_turn=None, history=history[-keep:], pending_therapist=pending,
               pending_context=pending_ctx, n_microdialogues=s.n_microdialogues + len(out))
    return s, out


def _flush_pending(s: SessionState, now: float) -> tuple[SessionState, list[Microdialogue]]:
    if s.pending_therapist is None:
        return s, []
    md = Microdialogue(s.session_id, s.pending_context, s.pending_therapist, None, now)
    return evolve(s, history=(s.history + (s.pending_therapist,)), pending_therapist=None,
                  pending_context=(), n_microdialogues=s.n_microdialogues + 1), [md]


SESSION_META = ("therapist_id", "client_id", "program_id", "scheduled_minutes")


def _meta(m: Utterance | SessionStart) -> dict:
    return {k: getattr(m, k) for k in SESSION_META if getattr(m, k) is not None}


def _with_meta(s: SessionState, m: Utterance | SessionStart) -> SessionState:
    return evolve(s, **_meta(m))


def apply_utterance(s: SessionState, u: Utterance, now: float, cfg: WindowConfig) -> Step:
    if u.seq <= s.last_seq:
        return Step(s, outcome="duplicate")  # redelivery: at-least-once input, idempotent state
    if s.ended:
        return Step(s, outcome="late")
    # One rebuild for the bookkeeping and, when the speaker continues, the turn.
    update = _meta(u)
    update.update(missing_utterances=s.missing_utterances + (u.seq - s.last_seq - 1),
                  last_seq=u.seq, n_utterances=s.n_utterances + 1, last_activity_at=now,
                  first_start_s=s.first_start_s if s.first_start_s is not None else u.start_s,
                  last_time_s=u.end_s if u.end_s is not None else (u.start_s if u.start_s is not None
                                                                 else s.last_time_s))
    if s.open_turn is not None and s.open_turn.speaker == u.speaker:
        return Step(evolve(s, open_turn=s.open_turn.extended(u), **update))
    s, out = _close_open_turn(evolve(s, **update), cfg, now)
    out = [evolve(md, trigger_seq=u.seq) for md in out]
    return Step(evolve(s, open_turn=WindowTurn.of(u)), tuple(out))


def apply_silence_check(s: SessionState, at: float, cfg: WindowConfig) -> Step:
    if s.ended or s.last_activity_at is None or at - s.last_activity_at < cfg.silence_flush_s:
        return Step(s, outcome="control")
    s, out = _close_open_turn(s, cfg, at)
    s, more = _flush_pending(s, at)
    return Step(s, tuple(out + more), outcome="control")


def apply_session_end(s: SessionState, end: SessionEnd, now: float, cfg: WindowConfig) -> Step:
    if s.ended:
        return Step(s, outcome="duplicate")
    s, out = _close_open_turn(s, cfg, now)
    s, more = _flush_pending(s, now)
    missing = s.missing_utterances + max(0, end.n_utterances - (s.last_seq + 1))
    return Step(evolve(s, ended=True, missing_utterances=missing,
                       last_time_s=end.end_s if end.end_s is not None else s.last_time_s),
                tuple(out + more), outcome="control", ended_now=True)


def seq_gap_too_large(s: SessionState | None, msg, max_gap: int) -> bool:
    """An utterance whose seq jumps more than ``max_gap`` past the session's last applied seq."""
    last = s.last_seq if s is not None else -1
    return isinstance(msg, Utterance) and msg.seq - last > max_gap


def apply_message(s: SessionState | None, msg, now: float, cfg: WindowConfig) -> Step:
    """Dispatch one validated inbound message onto a session's state."""
    s = s if s is not None else SessionState(session_id=msg.session_id)
    if isinstance(msg, Utterance):
        return apply_utterance(s, msg, now, cfg)
    if isinstance(msg, SessionStart):
        consent = msg.consent if msg.consent is not None else s.consent
        return Step(evolve(_with_meta(s, msg), consent=consent), outcome="control")
    if isinstance(msg, SessionEnd):
        return apply_session_end(s, msg, now, cfg)
    if isinstance(msg, SilenceCheck):
        return apply_silence_check(s, msg.at, cfg)
    raise TypeError(f"unsupported message type {type(msg).__name__}")


def window_session(utterances: Iterable[Utterance], cfg: WindowConfig,
                   session_id: str) -> tuple[SessionState, list[Microdialogue]]:
    """Offline path: run a whole session through the same state machine as the worker."""
    s, out, n = SessionState(session_id=session_id), list[Microdialogue](), 0
    for i, u in enumerate(utterances):
        step = apply_utterance(s, u, float(i), cfg)
        s, n = step.state, n + 1
        out.extend(step.microdialogues)
    step = apply_session_end(s, SessionEnd(session_id=session_id, n_utterances=n), float(n), cfg)
    out.extend(step.microdialogues)
    return step.state, out
