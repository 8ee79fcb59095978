"""kill -9 of the worker mid-stream: a new worker recovers the table from its changelog, and at-least-once
redelivery changes nothing visible: one summary per session, the same event ids as the offline path."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from homework_monitor.cli import summarize_corpus_sessions
from homework_monitor.deploy.local_stack import Ports, start_broker, start_triton, start_worker
from homework_monitor.deploy.services import ServiceStack
from homework_monitor.producers.replay import demo_sessions_dir, make_producer, read_sessions, replay, schedule
from homework_monitor.stream.classifiers import InProcessClassifier
from homework_monitor.stream.config import Settings

from .conftest import consume

pytestmark = pytest.mark.integration


def test_worker_killed_mid_session_loses_nothing_and_duplicates_nothing(tmp_path):
    ports = Ports.free()
    settings = Settings(run_dir=tmp_path, silence_flush_s=3.0, app_id=f"hwm-crash-{ports.kafka}")
    log_dir = tmp_path / "logs"
    sessions = read_sessions([demo_sessions_dir()])[:4]
    msgs = schedule(sessions, speed=15.0, stagger_s=0.5)
    with ServiceStack() as stack:
        settings = start_broker(stack, settings, ports, log_dir)
        settings = start_triton(stack, settings, ports, log_dir)
        start_worker(stack, settings, log_dir, "worker-1")
        sender = threading.Thread(target=replay, args=(msgs, make_producer(settings), settings.topics.utterances),
                                  kwargs={"progress": False})
        sender.start()
        time.sleep(msgs[-1].at * 0.4)  # well inside the sessions
        os.killpg(stack["worker-1"].pid, signal.SIGKILL)
        # The replacement starts after the dead member's session has expired, as a restarted pod would.
        # Restarting within the session timeout sometimes left the new worker assigned but idle on
        # tansu (seen in 2 of 5 runs; not seen with this wait) -- see the closing note.
        time.sleep(settings.broker_session_timeout_s + 2)
        # The replacement runs through Faust's own CLI (`faust -A homework_monitor.stream.app worker`).
        start_worker(stack, settings, log_dir, "worker-2", faust_cli=True)
        sender.join()
        t = settings.topics
        first = consume(settings, [t.homework_events, t.session_summaries],
                        until=lambda r: len({s["session_id"] for s in r[t.session_summaries]}) >= len(sessions),
                        timeout_s=180)
        time.sleep(3)  # then read everything again, late redeliveries included
        out = consume(settings, [t.homework_events, t.session_summaries],
                      until=lambda r: all(len(r[k]) >= len(first[k]) for k in first), timeout_s=60)
        assert "recover" in (log_dir / "worker-2.log").read_text().lower()
    summaries = out[t.session_summaries]
    # Redelivery may re-send a summary, but always with the same id and content.
    assert {s["session_id"] for s in summaries} == {s["session_id"] for s in sessions}
    assert len({s["summary_id"] for s in summaries}) == len(sessions)
    for s in summaries:
        assert s["n_utterances"] == next(len(x["utterances"]) for x in sessions if x["session_id"] == s["session_id"])
    offline = summarize_corpus_sessions(sessions, InProcessClassifier(settings.artifact_dir), settings.event_threshold)
    want = {(s.session_id, a.turn, a.category) for s in offline for a in s.assignments}
    assert {(e["session_id"], e["turn"], e["category"]) for e in out[t.homework_events]} == want
