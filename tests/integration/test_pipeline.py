"""End to end on real components: replayed sessions -> tansu -> Faust worker -> tritonserver -> topics."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from homework_monitor.cli import summarize_corpus_sessions
from homework_monitor.producers.replay import demo_sessions_dir, make_producer, read_sessions, replay, schedule
from homework_monitor.stream.classifiers import InProcessClassifier

from .conftest import consume, metric_value, scrape

pytestmark = pytest.mark.integration

BAD_MESSAGES = {
    "malformed_json": b'{"session_id": "bad-1", "seq": 0, "speaker": "therapist", "text": ',
    "unknown_speaker": json.dumps({"session_id": "bad-2", "seq": 0, "speaker": "narrator",
                                   "text": "a line from nobody"}).encode(),
    "schema_error": json.dumps({"session_id": "bad-3", "speaker": "client", "text": "no seq here"}).encode(),
    "oversized_text": json.dumps({"session_id": "bad-4", "seq": 0, "speaker": "client",
                                  "text": "word " * 2000}).encode(),
}


@pytest.fixture(scope="module")
def replayed(live_stack):
    """Demo sessions at 50x, bad messages in between, and a redelivered slice of one session."""
    s = live_stack.settings
    sessions = read_sessions([demo_sessions_dir()])
    msgs = schedule(sessions, speed=50.0, stagger_s=0.3)
    producer = make_producer(s)
    for reason, payload in BAD_MESSAGES.items():
        producer.send(s.topics.utterances, key=reason.encode(), value=payload)
    counts = replay(msgs, producer, s.topics.utterances, progress=False)
    # At-least-once input: the first ten messages of one session arrive a second time.
    dup = [m for m in msgs if m.key == sessions[0]["session_id"] and m.kind == "utterance"][:10]
    for m in dup:
        producer.send(s.topics.utterances, key=m.key.encode(), value=m.value)
    producer.flush()
    t = s.topics
    out = consume(s, [t.homework_events, t.session_summaries, t.dead_letter],
                  until=lambda r: len(r[t.session_summaries]) >= len(sessions)
                  and len(r[t.dead_letter]) >= len(BAD_MESSAGES), timeout_s=240)
    return sessions, counts, dup, out


def test_every_session_gets_exactly_one_summary_and_counts_match(live_stack, replayed):
    sessions, counts, _, out = replayed
    summaries = out[live_stack.settings.topics.session_summaries]
    assert Counter(x["session_id"] for x in summaries) == Counter(x["session_id"] for x in sessions)
    sent = {x["session_id"]: len(x["utterances"]) for x in sessions}
    assert {x["session_id"]: x["n_utterances"] for x in summaries} == sent  # counts in == counts out
    assert all(x["missing_utterances"] == 0 for x in summaries)
    assert counts["utterance"] == sum(sent.values())


def test_planted_homework_turns_produce_events_with_the_right_category(live_stack, replayed):
    _, _, _, out = replayed
    expected = json.loads((demo_sessions_dir() / "EXPECTED.json").read_text())
    events = out[live_stack.settings.topics.homework_events]
    got = {(e["session_id"], e["turn"]): e["category"] for e in events}
    homework = {sid: [x for x in xs if "category" in x] for sid, xs in expected.items()}  # reviews aside
    planted = {(sid, x["turn"]): x["category"] for sid, xs in homework.items() for x in xs}
    assert {k: got.get(k) for k in planted} == planted
    summaries = {x["session_id"]: x for x in out[live_stack.settings.topics.session_summaries]}
    for sid, xs in homework.items():
        assert summaries[sid]["homework_assigned"] == bool(xs)
        assert set(summaries[sid]["categories"]) == {x["category"] for x in xs}


def test_online_events_equal_the_offline_path_exactly(live_stack, replayed):
    """No other events: the stream emits exactly what `homework-monitor summarize` finds offline
    (same windowing, same decision rule, in-process model vs Triton), and each event once."""
    sessions, _, _, out = replayed
    events = out[live_stack.settings.topics.homework_events]
    assert len({e["event_id"] for e in events}) == len(events)
    offline = summarize_corpus_sessions(sessions, InProcessClassifier(live_stack.settings.artifact_dir),
                                        live_stack.settings.event_threshold)
    want = {(s.session_id, a.turn): (a.category, a.confidence) for s in offline for a in s.assignments}
    got = {(e["session_id"], e["turn"]): (e["category"], e["confidence"]) for e in events}
    assert got.keys() == want.keys()
    for k in want:
        assert got[k][0] == want[k][0]
        assert got[k][1] == pytest.approx(want[k][1], abs=2e-3)


def test_bad_input_goes_to_dead_letter_and_the_worker_keeps_running(live_stack, replayed):
    _, _, _, out = replayed
    dead = out[live_stack.settings.topics.dead_letter]
    assert sorted(d["reason"] for d in dead) == sorted(BAD_MESSAGES)
    assert all(d["payload"] for d in dead)  # the raw message is kept, nothing is lost
    assert live_stack.services["worker-1"].is_running
    log = (live_stack.log_dir / "worker-1.log").read_text()
    assert "a line from nobody" not in log and "no seq here" not in log  # no transcript text in logs
    assert "event loop: uvloop" in log  # HWM_EVENT_LOOP's default, through `homework-monitor worker`


def test_metrics_scrape_worker_and_triton(live_stack, replayed):
    sessions, _, dup, out = replayed
    w = scrape(live_stack.worker_metrics_port)
    n_utt = sum(len(s["utterances"]) for s in sessions)
    assert metric_value(w, "hwm_utterances_total", result="ok") == n_utt
    assert metric_value(w, "hwm_utterances_total", result="duplicate") == len(dup)
    assert metric_value(w, "hwm_dead_letter_total") == len(BAD_MESSAGES)
    assert metric_value(w, "hwm_homework_events_total") == len(out[live_stack.settings.topics.homework_events])
    assert metric_value(w, "hwm_utterance_to_event_seconds_count") == len(out[live_stack.settings.topics.homework_events])
    assert metric_value(w, "hwm_session_summaries_total") == len(sessions)
    t = scrape(live_stack.ports.triton_metrics)
    assert metric_value(t, "nv_inference_request_success", model="homework_classifier") > 0
    assert metric_value(t, "nv_inference_request_failure", model="homework_classifier") == 0


def test_triton_scores_equal_in_process_scores(live_stack, tmp_path: Path):
    """Export -> Triton load -> classify gives the same probabilities as the artifact in process."""
    from homework_monitor.cli import main
    inp = tmp_path / "in.jsonl"
    rows = [{"id": "a", "context": [{"speaker": "client", "text": "I could not sleep again."}],
             "therapist": "This week, write down what time you go to bed and wake up, every day.",
             "client": "Okay, a sleep log."},
            {"id": "b", "context": [], "therapist": "How was the drive over here today?", "client": None},
            {"id": "c", "context": [], "therapist": "Try the four-six breathing each night before bed.",
             "client": "I can do that."}]
    inp.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    main(["classify", "--input", str(inp), "--output", str(tmp_path / "local.jsonl")])
    main(["classify", "--input", str(inp), "--output", str(tmp_path / "triton.jsonl"),
          "--triton-url", live_stack.settings.triton_url])
    local = [json.loads(x) for x in (tmp_path / "local.jsonl").read_text().splitlines()]
    remote = [json.loads(x) for x in (tmp_path / "triton.jsonl").read_text().splitlines()]
    assert [r["label"] for r in local] == [r["label"] for r in remote]
    for a, b in zip(local, remote):
        assert b["scores"] == pytest.approx(a["scores"], abs=1e-4)
