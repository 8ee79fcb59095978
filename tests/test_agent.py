"""The Faust agent under ``agent.test_context()``: no broker, outputs captured at ``Topic.send``.

The agent sends with ``await topic.send(...)`` and then awaits the returned futures; the sessions
table writes its changelog with ``Topic.send_soon``. Both are replaced by recorders, so nothing leaves
the process. The agent batches with ``take_events`` and does not yield, so ``put()`` returns before
the batch is processed: tests poll the recorder until the expected records arrive.
"""
from __future__ import annotations

import asyncio

import pytest

from homework_monitor.stream.app import create_app


@pytest.fixture
def app(settings_factory, fake_classifier, clock, sent):
    return create_app(settings_factory(batch_within_s=0.005, batch_size=16), classifier=fake_classifier,
                      clock=clock)


async def wait_for(agent, condition, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        crash = getattr(agent, "_crash_reason", None)
        if crash is not None:
            raise crash
        if loop.time() > deadline:
            raise AssertionError("timed out waiting for the agent")
        await asyncio.sleep(0.01)
    # let the rest of the batch (table writes) finish
    await asyncio.sleep(0.05)
    crash = getattr(agent, "_crash_reason", None)
    if crash is not None:
        raise crash


async def put_all(agent, messages):
    for m in messages:
        await agent.put(key=m.session_id.encode(), value=m.model_dump_json().encode())


def a_session(s):
    return [s.start(therapist_id="th-1"), s.therapist("How were the nights?"), s.client("Short."),
            s.therapist("This week, please try the breathing before bed."), s.client("Okay."),
            s.therapist("See you next week."), s.end()]


async def test_session_through_the_agent_yields_event_and_summary(app, sent, utterance_factory, clock):
    s = utterance_factory("s1")
    async with app.monitor_agent.test_context() as agent:
        await put_all(agent, a_session(s))
        await wait_for(agent, lambda: sent.on("session-summaries"))
    (event,) = sent.on("homework-events")
    assert (event["session_id"], event["turn"], event["category"]) == ("s1", 2, "practice")
    assert event["therapist_id"] == "th-1" and event["emitted_at"] == clock()
    (summary,) = sent.on("session-summaries")
    assert summary["homework_assigned"] and summary["categories"] == ["practice"]
    assert summary["n_utterances"] == 5 and summary["n_microdialogues"] == 3
    assert sent.on("dead-letter") == []
    keys = {k for t, k, _ in sent.records}
    assert keys == {b"s1"}


async def test_malformed_message_yields_a_dead_letter(app, sent):
    async with app.monitor_agent.test_context() as agent:
        await agent.put(key=b"s9", value=b"{definitely not json")
        await wait_for(agent, lambda: sent.on("dead-letter"))
    (dead,) = sent.on("dead-letter")
    assert dead["reason"] == "malformed_json"
    assert dead["payload"] == "{definitely not json" and dead["key"] == "s9"
    assert sent.on("homework-events") == [] and sent.on("session-summaries") == []


async def test_state_is_written_to_the_table_and_survives_batches(app, sent, utterance_factory):
    s = utterance_factory("s1")
    async with app.monitor_agent.test_context() as agent:
        await put_all(agent, [s.therapist("Could you write a few lines each day?"), s.client("Yes.")])
        await wait_for(agent, lambda: app.source_gate.decoded.has_unwritten())
        assert app.sessions_table.get("s1") is None  # applied, written with the next offset commit
        await app.source_gate.write()  # what the consumer's commit does first
        assert app.sessions_table["s1"]["pending_therapist"]["text"].startswith("Could you write")
        await asyncio.sleep(0.05)  # the next messages land in a later batch
        await put_all(agent, [s.therapist("Good."), s.end()])
        await wait_for(agent, lambda: sent.on("session-summaries"))
        await app.source_gate.write()
    assert [(e["turn"], e["category"]) for e in sent.on("homework-events")] == [(0, "journal")]
    assert app.sessions_table["s1"]["ended"] is True
    assert list(app.sessions_table["s1"]["history"]) == []  # retired: no transcript kept
    assert any(t.endswith("sessions-changelog") for t, _, _ in sent.changelog)


async def test_redelivered_messages_emit_nothing_new(app, sent, utterance_factory):
    s = utterance_factory("s1")
    msgs = a_session(s)
    async with app.monitor_agent.test_context() as agent:
        await put_all(agent, msgs)
        await wait_for(agent, lambda: sent.on("session-summaries"))
        before = len(sent.records)
        await put_all(agent, msgs)  # at-least-once redelivery
        await agent.put(key=b"s1", value=b"sentinel")  # processed after the redelivered messages
        await wait_for(agent, lambda: sent.on("dead-letter"))
    assert [t for t, _, _ in sent.records[before:]] == ["dead-letter"]


async def test_valid_and_invalid_messages_in_one_stream(app, sent, utterance_factory, fake_classifier):
    a, b = utterance_factory("a"), utterance_factory("b")
    async with app.monitor_agent.test_context() as agent:
        await put_all(agent, [a.therapist("Please read the handout."), b.therapist("Call the clinic.")])
        await agent.put(key=b"a", value=b'{"session_id": "a", "seq": 5, "speaker": "robot", "text": "x"}')
        await put_all(agent, [a.client("Ok."), b.client("Ok."), a.end(), b.end()])
        await wait_for(agent, lambda: len(sent.on("session-summaries")) == 2)
    assert sorted((e["session_id"], e["category"]) for e in sent.on("homework-events")) == [
        ("a", "learn"), ("b", "take_action")]
    assert [d["reason"] for d in sent.on("dead-letter")] == ["unknown_speaker"]
    assert sum(len(c) for c in fake_classifier.calls) == 2


class BrokenClassifier:
    """A classifier whose every call fails, with a message quoting its input (as server errors can)."""

    model_version = "broken/1"

    async def start(self) -> None:
        return None

    async def classify(self, items):
        raise RuntimeError(f"cannot score {items[0].therapist!r}")

    async def close(self) -> None:
        return None


async def test_a_failed_batch_stops_the_worker_without_output_or_commit(settings_factory, clock, sent,
                                                                         utterance_factory, caplog):
    stops: list[str] = []
    # One batch for the three messages (a long batch window, nothing awaited between the puts): the
    # batch that fails is the session's first, so nothing at all may come out of it.
    app = create_app(settings_factory(batch_within_s=0.5, batch_size=16, fatal_exit_delay_s=0),
                     classifier=BrokenClassifier(), clock=clock, stop_worker=lambda a, reason: stops.append(reason))
    s, later = utterance_factory("s1"), utterance_factory("s2")
    async with app.monitor_agent.test_context() as agent:
        for m in (s.therapist("Please breathe slowly, PHI-MARKER-7731."), s.client("Okay."), s.end()):
            await agent.put(key=m.session_id.encode(), value=m.model_dump_json().encode(), wait=False)
        await wait_for(agent, lambda: stops)
        for m in (later.start(), later.end()):  # nothing after the failed batch is processed
            await agent.put(key=m.session_id.encode(), value=m.model_dump_json().encode(), wait=False)
        await asyncio.sleep(0.2)
        assert app.health.fatal == "batch_failed" and app.health.commits_blocked == "batch_failed"
        assert not app.health.liveness(app.health.heartbeat_at or 0.0).ok
        assert stops == ["batch_failed"]
    assert sent.records == [] and sent.changelog == []
    assert app.sessions_table.get("s1") is None and app.sessions_table.get("s2") is None
    failure = [r.getMessage() for r in caplog.records if "failed with RuntimeError" in r.getMessage()]
    assert failure and "PHI-MARKER" not in caplog.text and "breathe" not in caplog.text


async def test_no_offset_is_committed_once_commits_are_blocked(app):
    """Every faust commit path ends in the consumer's _commit: blocked, it commits nothing."""
    from faust.types import TP
    app.health.block_commits("batch_failed")
    assert await app.consumer._commit({TP("utterances", 0): 42}) is False


async def test_an_offset_commit_stores_the_applied_states_and_positions_first(app, sent, utterance_factory,
                                                                               monkeypatch):
    """The committed offset never passes the stored state: the consumer's _commit writes it first."""
    from faust.transport.drivers.aiokafka import Consumer
    from faust.types import TP

    from homework_monitor.stream.progress import marker_key
    at_commit = []

    async def broker_commit(self, offsets):
        at_commit.append((dict(offsets), app.sessions_table.get("s1"), [k for _, k, _ in sent.changelog]))
        return True
    monkeypatch.setattr(Consumer, "_commit", broker_commit)  # the broker's side of it
    s = utterance_factory("s1")
    async with app.monitor_agent.test_context() as agent:
        await put_all(agent, a_session(s))
        await wait_for(agent, lambda: sent.on("session-summaries"))
        assert sent.changelog == []
        assert await app.consumer._commit({TP("utterances", 0): 7}) is True
    ((offsets, state, changelog),) = at_commit
    assert offsets == {TP("utterances", 0): 7} and state["ended"]
    assert changelog == ["s1", marker_key("utterances", 0)]


async def test_a_finished_batch_counts_as_progress(app, sent, utterance_factory):
    s = utterance_factory("s1")
    app.health.assigned([("utterances", 0)], 0.0)
    async with app.monitor_agent.test_context() as agent:
        await put_all(agent, a_session(s))
        await wait_for(agent, lambda: sent.on("session-summaries"))
        assert app.health.agent_started and app.health.agent_down_since is None
    # test_context feeds partition 0 from offset 0: the last record processed is the session's end
    assert app.health.partitions[("utterances", 0)].processed == len(a_session(s)) - 1
