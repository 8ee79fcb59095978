"""One micro-batch of inbound records -> state updates + events + summaries + dead letters.

No Kafka or Faust here: the worker's agent hands in records and a state lookup, then sends what
comes back, so the same code runs under ``agent.test_context()`` and in unit tests. Order matters
and is kept: messages apply in arrival order per session; every microdialogue of the batch is
classified in one call; summaries come after their session's last microdialogues are decided.

Beside events and summaries a batch gives: ``session-opened`` announcements (a session's first
message), nudges (stream/nudges.py, evaluated per touched session once the batch's homework is decided),
reviews of the client's previous homework (stream/review.py) and the previous session itself, looked up
once per session through ``load_history`` (stream/followup.py). Consent (stream/consent.py) comes first:
a declined session keeps only its marker and its messages are dropped.

Every record is accounted for exactly once in ``outcomes`` (ok, duplicate, late, control, no_consent or
dead_letter): a failure while parsing or applying one record is that record's dead letter. A failure
of the classifier call is the batch's, and is left to the caller (retry, or stop before committing).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from homework_monitor.contract import Classifier

from .aggregation import decide, homework_event, record_assignment, session_opened, session_summary
from .config import Settings
from .consent import consent_verdict, declined_marker
from .followup import ClientHistory, needs_previous, with_previous
from .nudges import NudgeConfig, check_due, fire, fire_before_end
from .review import record_reviews
from .schemas import CLASSES, DeadLetter, HomeworkEvent, Nudge, SessionOpened, SessionSummary
from .validation import Err, Rejected, dead_letter, parse_inbound
from .windowing import Microdialogue, SessionState, WindowConfig, apply_message, seq_gap_too_large


@dataclass(frozen=True)
class InboundRecord:
    value: bytes | str | dict | None  # None: a record with a null value (a tombstone)
    key: str | None = None
    partition: int | None = None
    offset: int | None = None


@dataclass
class BatchResult:
    states: dict[str, SessionState] = field(default_factory=dict)  # changed sessions only
    events: list[HomeworkEvent] = field(default_factory=list)
    summaries: list[SessionSummary] = field(default_factory=list)
    nudges: list[Nudge] = field(default_factory=list)
    opened: list[SessionOpened] = field(default_factory=list)
    declined: list[str] = field(default_factory=list)  # sessions declined in this batch (counted once)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    outcomes: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    last_record_of: dict[str, int] = field(default_factory=dict)  # session -> index in the batch
    n_microdialogues: int = 0


def retire(state: SessionState) -> SessionState:
    """After the summary, keep only what idempotence needs (seq, ended), not the transcript."""
    return SessionState(session_id=state.session_id, therapist_id=state.therapist_id,
                        last_seq=state.last_seq, n_utterances=state.n_utterances,
                        n_microdialogues=state.n_microdialogues, ended=True,
                        missing_utterances=state.missing_utterances)


def window_config(settings: Settings) -> WindowConfig:
    return WindowConfig(context_turns=settings.context_turns, silence_flush_s=settings.silence_flush_s)


async def process_batch(records: Sequence[InboundRecord], load_state: Callable[[str], SessionState | None],
                        classifier: Classifier, settings: Settings, clock: Callable[[], float],
                        source_topic: str = "utterances",
                        load_history: Callable[[str], ClientHistory | None] | None = None) -> BatchResult:
    """``load_history(client_id)``: the client's homework history (None: no follow-up lookups)."""
    out = BatchResult()
    cfg = window_config(settings)
    pending: list[Microdialogue] = []
    ended: list[str] = []
    for i, rec in enumerate(records):
        now = clock()
        try:
            parsed = parse_inbound(rec.value, max_text_chars=settings.max_text_chars, received_at=now,
                                   source_topic=source_topic, partition=rec.partition, offset=rec.offset,
                                   key=rec.key)
            if isinstance(parsed, Err):
                out.dead_letters.append(parsed.dead_letter)
                out.outcomes["dead_letter"] += 1
                continue
            sid = parsed.message.session_id
            state = out.states.get(sid) or load_state(sid)
            verdict = consent_verdict(state, parsed.message, settings.require_consent)
            if verdict != "process":
                out.outcomes["no_consent"] += 1
                if verdict == "decline":
                    _decline(out, sid, i, pending, ended)
                continue
            if seq_gap_too_large(state, parsed.message, settings.max_seq_gap):
                out.dead_letters.append(dead_letter(
                    rec.value, Rejected("seq_gap", f"seq more than {settings.max_seq_gap} past the session's last"),
                    received_at=now, source_topic=source_topic, partition=rec.partition, offset=rec.offset,
                    key=rec.key))
                out.outcomes["dead_letter"] += 1
                continue
            opened = state is None
            step = apply_message(SessionState(session_id=sid, started_at=now) if opened else state,
                                 parsed.message, now, cfg)
            new_state = step.state
            client = new_state.client_id
            if load_history is not None and client is not None and needs_previous(new_state):
                new_state = with_previous(new_state, load_history(client))
        except Exception as exc:  # noqa: BLE001
            # Whatever fails for one record (an unreadable stored state, a bug met by odd input) is that
            # record's dead letter; the rest of the batch goes on and the session's state is unchanged.
            # The detail is the exception type only: exception messages can quote the text.
            out.dead_letters.append(dead_letter(
                rec.value, Rejected("processing_error", type(exc).__name__), received_at=now,
                source_topic=source_topic, partition=rec.partition, offset=rec.offset, key=rec.key))
            out.outcomes["dead_letter"] += 1
            continue
        out.outcomes[step.outcome] += 1
        if step.outcome in ("duplicate", "late"):
            continue  # already applied before a redelivery: nothing changes, nothing is emitted
        out.states[sid] = new_state
        out.last_record_of[sid] = i
        if opened:
            out.opened.append(session_opened(new_state, getattr(parsed.message, "start_s", None), now,
                                             settings.default_scheduled_minutes))
        pending.extend(step.microdialogues)
        if step.ended_now:
            ended.append(sid)
    out.n_microdialogues = len(pending)
    if pending:
        probs = await classifier.classify([md.example() for md in pending])
        emitted_at = clock()
        for md, p in zip(pending, probs):
            scores = dict(zip(CLASSES, map(float, p)))
            d = decide(scores, settings.event_threshold)
            if not d.is_homework:
                continue
            state = out.states[md.session_id]
            event = homework_event(state, md, scores, d, classifier.model_version, emitted_at)
            out.events.append(event)
            out.latencies.append(emitted_at - md.closed_at)
            out.states[md.session_id] = record_assignment(state, event)
        # The review rule reads every microdialogue; a model review score would come with ``probs``.
        for md in pending:
            out.states[md.session_id] = record_reviews(out.states[md.session_id], [md])
    now = clock()
    nudge_cfg = NudgeConfig.from_settings(settings)
    for sid, state in list(out.states.items()):
        if sid in ended:  # what was due on the session's clock before its end (a worker behind its input)
            state, nudges = fire_before_end(state, nudge_cfg, now)
        else:
            state, nudges = fire(state, now, nudge_cfg)  # nothing for earlier ended or declined sessions
        out.states[sid] = state
        out.nudges.extend(nudges)
    for sid in ended:
        out.summaries.append(session_summary(out.states[sid], classifier.model_version, clock(),
                                             settings.default_scheduled_minutes))
        out.states[sid] = retire(out.states[sid])
    return out


def _decline(out: BatchResult, sid: str, i: int, pending: list[Microdialogue], ended: list[str]) -> None:
    """Replace what the batch holds of a session by its declined marker: its microdialogues are not
    classified, it is not announced or summarised."""
    out.states[sid] = declined_marker(sid)
    out.last_record_of[sid] = i
    out.declined.append(sid)
    pending[:] = [md for md in pending if md.session_id != sid]
    ended[:] = [x for x in ended if x != sid]
    out.opened[:] = [o for o in out.opened if o.session_id != sid]


def nudge_checks_due(states: Mapping[str, SessionState], now: float, cfg: NudgeConfig,
                     already_sent: Mapping[str, float], resend_s: float) -> list[str]:
    """Sessions with a time-based nudge due and no check sent in the last ``resend_s`` seconds (the
    check is processed in well under that; one that got lost is sent again)."""
    return [sid for sid, st in states.items()
            if st is not None and check_due(st, now, cfg) and now - already_sent.get(sid, float("-inf")) >= resend_s]


def silence_checks_due(states: Mapping[str, SessionState], now: float, silence_s: float,
                       already_sent: Mapping[str, float]) -> list[str]:
    """Sessions whose waiting turn has been silent long enough and not yet been checked."""
    return [sid for sid, st in states.items()
            if st is not None and st.waiting and st.last_activity_at is not None
            and now - st.last_activity_at >= silence_s and already_sent.get(sid) != st.last_activity_at]
