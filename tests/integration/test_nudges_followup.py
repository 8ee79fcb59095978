"""Nudges, cross-session follow-up, consent and session-opened on the real stack (tansu, tritonserver,
the Faust worker). Short rule times (N = 30 s before a 1-minute session's end, M = 15 s) keep it quick.

- ``it-quiet`` (no homework, 1 minute scheduled) goes silent at 0:09: the worker's timer fires
  "no homework yet" at 0:30 with no utterance arriving, exactly once.
- client ``c-it-1``: ``it-first`` assigns homework; ``it-second`` starts after its summary, gets
  "review last time's homework" with it, reviews it, and its summary says so.
- client ``c-it-2``: ``it-2b`` does not review ``it-2a``'s homework: "not yet reviewed" at 0:15 and a
  summary saying it was not reviewed.
- ``it-private`` declines consent: nothing of it on any output topic, only counters.
"""
from __future__ import annotations

import time

import pytest

from homework_monitor.producers.replay import make_producer
from homework_monitor.stream.schemas import SessionEnd, SessionStart, Utterance

from .conftest import consume, metric_value, scrape

pytestmark = pytest.mark.integration

WORKER_SETTINGS = {"nudge_no_homework_before_end_min": 0.5, "nudge_review_within_min": 0.25}
OUTPUTS = ("homework_events", "session_summaries", "nudges", "session_opened", "dead_letter")

# Written for this test.
LINES = {
    "it-quiet": ["Hi Sam, thanks for coming in today.", "Hi. Busy week.", "Tell me about the busy week.",
                 "Mostly work deadlines, nothing dramatic."],
    "it-first": ["How have the evenings been?", "Pretty low, to be honest.",
                 "This week, I'd like you to write down three good moments every evening in a notebook, before bed.",
                 "Three good moments. Okay, I can do that.", "Great. See you next week.", "See you."],
    "it-second": ["Last week you were going to write down three good moments every evening. How did that go?",
                  "I did it five nights out of seven.", "Five nights is a lot. What did you notice?",
                  "That the days were less bad than I thought."],
    "it-2a": ["What gets in the way of exercising?", "I never have time after work.",
              "Before our next session, please go for a twenty-minute walk on three mornings this week.",
              "Okay, three mornings. I'll try.", "Good. See you next week.", "Bye."],
    "it-2b": ["Hello again. How was the drive in?", "Fine, not much traffic.",
              "What would you like to talk about today?", "My sister is visiting next month.",
              "Tell me more about your sister.", "We haven't spoken in a while."],
    "it-private": ["This week, please write down every time you feel the urge to check your phone.",
                   "Okay, I'll keep a list."],
}
META = {"it-quiet": {"client_id": "c-it-0", "scheduled_minutes": 1}, "it-first": {"client_id": "c-it-1"},
        "it-second": {"client_id": "c-it-1"}, "it-2a": {"client_id": "c-it-2"}, "it-2b": {"client_id": "c-it-2"},
        "it-private": {"client_id": "c-it-3"}}


def start(sid: str, **fields) -> bytes:
    return SessionStart(session_id=sid, therapist_id="t-it", **META[sid], **fields).model_dump_json().encode()


def utterances(sid: str, step_s: float = 3.0) -> list[bytes]:
    return [Utterance(session_id=sid, seq=i, speaker="therapist" if i % 2 == 0 else "client", text=text,
                      start_s=step_s * i, therapist_id="t-it", **META[sid]).model_dump_json().encode()
            for i, text in enumerate(LINES[sid])]


def end(sid: str) -> bytes:
    return SessionEnd(session_id=sid, n_utterances=len(LINES[sid])).model_dump_json().encode()


@pytest.fixture(scope="module")
def run(live_stack):
    s = live_stack.settings
    t = s.topics
    producer = make_producer(s)

    def send(sid: str, *values: bytes, pause_s: float = 0.0) -> None:
        for v in values:
            producer.send(t.utterances, key=sid.encode(), value=v)
            if pause_s:
                producer.flush()
                time.sleep(pause_s)
        producer.flush()

    send("it-quiet", start("it-quiet"), *utterances("it-quiet"))  # last utterance at 0:09, then silence
    quiet_since = time.monotonic()
    send("it-private", start("it-private", consent=False), *utterances("it-private"), end("it-private"))
    for sid in ("it-first", "it-2a"):
        send(sid, start(sid), *utterances(sid), end(sid))
    consume(s, [t.session_summaries], timeout_s=60,
            until=lambda r: {"it-first", "it-2a"} <= {x["session_id"] for x in r[t.session_summaries]})
    time.sleep(2.0)  # the summaries reach the client history table (two hops, well under a second)
    # the second sessions, started as a live session starts: the first message, then the conversation
    send("it-second", start("it-second"), pause_s=1.0)
    send("it-2b", start("it-2b"), pause_s=1.0)
    send("it-second", *utterances("it-second"), pause_s=0.2)
    send("it-2b", *utterances("it-2b", step_s=5.0), pause_s=0.2)  # the last one at 0:25, past M = 0:15
    send("it-second", end("it-second"))
    send("it-2b", end("it-2b"))
    out = consume(s, [t.nudges], timeout_s=60,
                  until=lambda r: any(n["session_id"] == "it-quiet" for n in r[t.nudges]))
    quiet_nudged_after_s = time.monotonic() - quiet_since
    send("it-quiet", end("it-quiet"))
    processed = {"it-quiet", "it-first", "it-second", "it-2a", "it-2b"}
    out = consume(s, [getattr(t, name) for name in OUTPUTS], timeout_s=90,
                  until=lambda r: processed <= {x["session_id"] for x in r[t.session_summaries]})
    producer.close()
    return {name: out[getattr(t, name)] for name in OUTPUTS}, quiet_nudged_after_s


def by_session(records: list[dict], sid: str) -> list[dict]:
    return [r for r in records if r["session_id"] == sid]


def test_a_quiet_session_without_homework_gets_exactly_one_no_homework_yet_nudge(run):
    out, nudged_after_s = run
    (nudge,) = by_session(out["nudges"], "it-quiet")
    assert nudge["rule"] == "no_homework_yet" and nudge["therapist_id"] == "t-it"
    # due at 0:30 of the session, whose last utterance was at 0:09: fired by the timer, not by an utterance
    assert nudge["session_time_s"] >= 30.0 and nudged_after_s >= 15.0
    assert nudge["previous_assignments"] == [] and "notebook" not in nudge["message"]
    (summary,) = by_session(out["session_summaries"], "it-quiet")
    assert not summary["homework_assigned"] and summary["scheduled_minutes"] == 1
    assert summary["note"] == "No homework assigned this session."


def test_a_clients_second_session_is_reminded_of_the_first_ones_homework_and_reviews_it(run):
    out, _ = run
    (first,) = by_session(out["session_summaries"], "it-first")
    assert [a["category"] for a in first["assignments"]] == ["journal"]
    assert first["previous_session_id"] is None
    (nudge,) = by_session(out["nudges"], "it-second")  # reviewed in time: no "not yet reviewed"
    assert nudge["rule"] == "review_previous" and nudge["previous_session_id"] == "it-first"
    assert nudge["previous_assignments"] == first["assignments"]  # categories and the therapist's words
    (second,) = by_session(out["session_summaries"], "it-second")
    assert second["previous_session_id"] == "it-first" and second["previous_homework"] == first["assignments"]
    assert second["previous_homework_reviewed"] is True
    assert [(r["turn"], r["source"]) for r in second["reviews"]] == [(0, "rule")]


def test_homework_not_reviewed_gets_its_nudge_and_the_summary_says_so(run):
    out, _ = run
    (first,) = by_session(out["session_summaries"], "it-2a")
    rules = sorted(n["rule"] for n in by_session(out["nudges"], "it-2b"))
    assert rules == ["not_yet_reviewed", "review_previous"]
    (summary,) = by_session(out["session_summaries"], "it-2b")
    assert summary["previous_session_id"] == "it-2a" and summary["previous_homework"] == first["assignments"]
    assert summary["previous_homework_reviewed"] is False and summary["reviews"] == []


def test_each_nudge_once_and_every_processed_session_announced_once(run):
    out, _ = run
    ids = [n["nudge_id"] for n in out["nudges"]]
    assert len(ids) == len(set(ids)) == 4
    opened = sorted(o["session_id"] for o in out["session_opened"])
    assert opened == sorted(["it-quiet", "it-first", "it-second", "it-2a", "it-2b"])
    (quiet,) = by_session(out["session_opened"], "it-quiet")
    (summary,) = by_session(out["session_summaries"], "it-quiet")
    assert quiet["scheduled_minutes"] == 1 and summary["started_at"] == quiet["started_at"]


def test_a_session_without_consent_leaves_nothing_on_any_output_topic(live_stack, run):
    out, _ = run
    for name in ("homework_events", "session_summaries", "nudges", "session_opened"):
        assert by_session(out[name], "it-private") == [], name
    assert out["dead_letter"] == []  # dropped, not dead-lettered (a dead letter keeps an excerpt)
    metrics = scrape(live_stack.worker_metrics_port)
    assert metric_value(metrics, "hwm_sessions_without_consent_total") == 1
    n = len(LINES["it-private"]) + 2  # start, utterances, end: each dropped and counted
    assert metric_value(metrics, "hwm_utterances_total", result="no_consent") == n
    assert metric_value(metrics, "hwm_nudges_total", rule="no_homework_yet") == 1
    log = (live_stack.log_dir / "worker-1.log").read_text()
    assert "urge to check your phone" not in log and "good moments" not in log
