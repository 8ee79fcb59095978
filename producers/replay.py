"""Replay sessions (shared corpus JSONL schema) into Kafka as live utterances.

Pace: real time from ``start_s`` where present; otherwise synthetic (150 words/min plus a 1 s gap per
turn, as ../shared/data/README.md suggests); both divided by ``speed``. N sessions run at once with
staggered starts. Each session: ``session_start``, its utterances (seq = index), ``session_end``.
A client is in one session at a time: a session whose ``meta.client_id`` had an earlier session in the
input starts ``FOLLOW_UP_GAP_S`` after that one ended, so the earlier one is the later one's previous
session (docs/NUDGES.md).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from homework_monitor.stream.offline import session_utterances
from homework_monitor.stream.schemas import SessionEnd, SessionStart

WORDS_PER_S = 150 / 60
TURN_GAP_S = 1.0
# Wall seconds between the end of a client's session and the start of their next one: time for the
# earlier summary to reach the client history table the next session looks up (well under a second when
# the worker keeps up; the margin covers a worker seconds behind a fast replay on a small machine).
FOLLOW_UP_GAP_S = 15.0


def read_sessions(paths: Iterable[Path]) -> list[dict]:
    out = []
    for p in paths:
        p = Path(p)
        files = sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
        for f in files:
            with open(f, encoding="utf-8") as fh:
                out += [json.loads(line) for line in fh if line.strip()]
    return out


def demo_sessions_dir() -> Path:
    return Path(__file__).resolve().parent / "demo_sessions"


def utterance_offsets(utterances: Sequence[dict]) -> list[float]:
    """Seconds from session start for each utterance: real ``start_s`` or a synthetic pace."""
    if utterances and all(u.get("start_s") is not None for u in utterances):
        # Some transcripts have start times that step backwards; never reorder a session.
        t0, offsets, prev = utterances[0]["start_s"], [], 0.0
        for u in utterances:
            prev = max(prev, u["start_s"] - t0)
            offsets.append(prev)
        return offsets
    offsets, t = [], 0.0
    for u in utterances:
        offsets.append(t)
        t += len(u["text"].split()) / WORDS_PER_S + TURN_GAP_S
    return offsets


@dataclass(frozen=True)
class Scheduled:
    at: float  # seconds after replay start
    key: str
    value: bytes
    kind: str  # session_start | utterance | session_end
    seq: int | None = None


def session_messages(session: dict, start_at: float, speed: float,
                     session_id: str | None = None) -> list[Scheduled]:
    sid = session_id or session["session_id"]
    # The offline path's conversion: the same seq numbering, speaker filter and text clean-up.
    utts = [u.model_copy(update={"session_id": sid}) for u in session_utterances(session)]
    offs = utterance_offsets([u.model_dump() for u in utts])
    m = utts[0].model_dump(include={"therapist_id", "client_id", "program_id", "scheduled_minutes"}) if utts else {}
    out = [Scheduled(start_at, sid, SessionStart(session_id=sid, **m).model_dump_json().encode(), "session_start")]
    for u, off in zip(utts, offs):
        out.append(Scheduled(start_at + off / speed, sid, u.model_dump_json().encode(), "utterance", u.seq))
    end_at = start_at + (offs[-1] if offs else 0.0) / speed + 0.001
    n = utts[-1].seq + 1 if utts else 0
    out.append(Scheduled(end_at, sid, SessionEnd(session_id=sid, n_utterances=n).model_dump_json().encode(),
                         "session_end"))
    return out


def schedule(sessions: Sequence[dict], speed: float, stagger_s: float, copies: int = 1) -> list[Scheduled]:
    """All messages of all sessions, ordered by send time; ``copies`` > 1 clones sessions (load tests)."""
    msgs = []
    n = 0
    for c in range(copies):
        client_free_at: dict[str, float] = {}  # when each client's latest session (of this copy) ends
        for s in sessions:
            sid = s["session_id"] if copies == 1 else f"{s['session_id']}#{c}"
            client = (s.get("meta") or {}).get("client_id")
            start = n * stagger_s
            if client in client_free_at:
                start = max(start, client_free_at[client] + FOLLOW_UP_GAP_S)
            session = session_messages(s, start, speed, sid)
            if client is not None:
                client_free_at[client] = session[-1].at
            msgs += session
            n += 1
    return sorted(msgs, key=lambda m: m.at)


def sustained(sessions: Sequence[dict], slots: int, duration_s: float, speed: float = 1.0,
              stagger_s: float = 0.0, gap_s: float = FOLLOW_UP_GAP_S) -> list[Scheduled]:
    """``slots`` sessions live at every moment for ``duration_s`` (soak tests): each slot plays the
    sessions one after another, a new one ``gap_s`` after the last ended, with fresh session ids
    (``<id>#<slot>.<n>``). Messages of sessions cut by the end of the run are dropped after it."""
    msgs: list[Scheduled] = []
    for slot in range(slots):
        at, n = slot * stagger_s, 0
        while at < duration_s:
            s = sessions[(slot + n * slots) % len(sessions)]
            session = session_messages(s, at, speed, f"{s['session_id']}#{slot}.{n}")
            msgs += [m for m in session if m.at <= duration_s]
            at, n = session[-1].at + gap_s, n + 1
    return sorted(msgs, key=lambda m: m.at)


def make_producer(settings):
    from kafka import KafkaProducer
    return KafkaProducer(acks="all", linger_ms=2, **settings.kafka_client_kwargs())


def replay(msgs: Sequence[Scheduled], producer, topic: str, progress: bool = True,
           on_sent: Callable[[Scheduled, float], None] | None = None) -> dict:
    """Send each message at its time (keyed by session_id). Returns counts."""
    from tqdm import tqdm
    t0 = time.monotonic()
    counts = {"session_start": 0, "utterance": 0, "session_end": 0}
    with tqdm(total=len(msgs), disable=not progress, desc="replay", unit="msg") as bar:
        for m in msgs:
            delay = m.at - (time.monotonic() - t0)
            if delay > 0:
                time.sleep(delay)
            producer.send(topic, key=m.key.encode(), value=m.value)
            if on_sent:
                on_sent(m, time.time())
            counts[m.kind] += 1
            bar.update(1)
    producer.flush()
    return counts
