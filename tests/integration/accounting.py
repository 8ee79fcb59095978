"""Every utterance accounted for: what a replay sent against what the worker's summaries and events say."""
from __future__ import annotations

import time
from collections import Counter, defaultdict

from homework_monitor.cli import summarize_corpus_sessions
from homework_monitor.stream.classifiers import InProcessClassifier
from homework_monitor.stream.config import Settings

from .conftest import consume


def offline_events(sessions: list[dict], settings: Settings) -> set[tuple[str, int, str]]:
    """(session, turn, category) of every homework event the offline path finds."""
    offline = summarize_corpus_sessions(sessions, InProcessClassifier(settings.artifact_dir),
                                        settings.event_threshold, settings)
    return {(s.session_id, a.turn, a.category) for s in offline for a in s.assignments}


def read_outputs(settings: Settings, sessions: int, timeout_s: float) -> dict[str, list[dict]]:
    """Events and summaries once every session has a summary, read again to catch late redeliveries."""
    t = settings.topics
    topics = [t.homework_events, t.session_summaries]
    first = consume(settings, topics, until=lambda r: len({s["session_id"] for s in r[t.session_summaries]}) >= sessions,
                    timeout_s=timeout_s)
    time.sleep(2)
    return consume(settings, topics, until=lambda r: all(len(r[k]) >= len(first[k]) for k in first), timeout_s=30)


def unaccounted(sent: Counter, summaries: list[dict], events: list[dict], expected_events: set) -> dict:
    """Everything that differs from 'each sent utterance applied once': empty when all is well."""
    by_session: dict[str, list[dict]] = defaultdict(list)
    for s in summaries:
        by_session[s["session_id"]].append(s)
    problems: dict = {}
    for sid, n_sent in sent.items():
        got = by_session.get(sid, [])
        ids = {s["summary_id"] for s in got}
        if len(ids) != 1:
            problems[sid] = f"{len(ids)} distinct summaries"
            continue
        applied = {s["n_utterances"] for s in got}
        missing = {s["missing_utterances"] for s in got}
        if applied != {n_sent} or missing != {0}:
            problems[sid] = f"sent {n_sent}, applied {sorted(applied)}, missing {sorted(missing)}"
    extra_sessions = set(by_session) - set(sent)
    if extra_sessions:
        problems["unexpected sessions"] = sorted(extra_sessions)
    got_events = {(e["session_id"], e["turn"], e["category"]) for e in events}
    if got_events != expected_events:
        problems["events missing"] = sorted(expected_events - got_events)
        problems["events extra"] = sorted(got_events - expected_events)
    return problems
