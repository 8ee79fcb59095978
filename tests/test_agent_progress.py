"""The agent's source positions and retired-session expiry under ``agent.test_context()`` (no broker).

Outputs and changelog writes are recorded at ``Topic.send``/``send_soon``; changelog futures resolve at
once, as the broker's acknowledgement would. There is no consumer here: ``app.source_gate.write()``
stands for what its offset commit does first (write the applied states and the position markers).
``agent.put`` gives records consecutive offsets of partition 0; moving the wrapper's ``sent_offset`` back re-sends at offsets already applied.
"""
from __future__ import annotations

import asyncio
import json

import pytest

from homework_monitor.stream.app import create_app
from homework_monitor.stream.expiry import expired_by_partition
from homework_monitor.stream.progress import is_marker_key, marker_key

GRACE = 3600.0


@pytest.fixture
def rec(sent):
    return sent  # the shared recorder of Topic.send / send_soon (tests/conftest.py)


@pytest.fixture
def app(settings_factory, fake_classifier, clock, rec):
    settings = settings_factory(batch_within_s=0.005, batch_size=16, table_store="memory",
                                retired_session_grace_s=GRACE)
    return create_app(settings, classifier=fake_classifier, clock=clock, serve_metrics=False)


async def until(condition, timeout=5.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "timed out waiting for the agent"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the rest of the batch (table writes)


async def put(agent, *messages):
    for m in messages:
        await agent.put(key=m.session_id.encode(), value=m.model_dump_json().encode())


def a_session(s):
    return [s.start(therapist_id="th-1"), s.therapist("Could you note your sleep each morning?"),
            s.client("I can."), s.therapist("Good."), s.end()]


async def test_position_marker_follows_the_states_and_counts_every_offset(app, rec, utterance_factory):
    s = utterance_factory("s1")
    async with app.monitor_agent.test_context() as agent:
        await put(agent, *a_session(s))
        await until(lambda: rec.on("session-summaries"))
        assert rec.changelog == []  # applied and sent; the table is written before the next commit
        await app.source_gate.write()
    key = marker_key("utterances", 0)
    assert app.sessions_table[key] == {"next_offset": 5}
    assert is_marker_key(rec.changelog[-1][1]) and rec.changelog[-1][2] == {"next_offset": 5}
    # every marker written after the session state of its batch
    for i, (_, k, _) in enumerate(rec.changelog):
        if is_marker_key(k):
            assert i > 0 and rec.changelog[i - 1][1] == "s1"


async def test_offsets_already_applied_are_skipped_before_parsing(app, rec, utterance_factory):
    s = utterance_factory("s1")
    async with app.monitor_agent.test_context() as agent:
        await put(agent, *a_session(s))
        await until(lambda: rec.on("session-summaries"))
        before = list(rec.records)
        agent.sent_offset = 2  # a redelivery of offsets 2.. (as after a restart from an older commit)
        await agent.put(key=b"s1", value=b"{not json, but this offset was applied already")
        await put(agent, s.end())  # offset 3: applied already as well
        agent.sent_offset = 5
        await agent.put(key=b"s9", value=b"{a new broken record")  # offset 5: new
        await until(lambda: rec.on("dead-letter"))
        await app.source_gate.write()
    assert [(t, json.loads(v)) for t, _, v in rec.records[len(before):]] == [("dead-letter", rec.on("dead-letter")[0])]
    assert rec.on("dead-letter")[0]["payload"] == "{a new broken record"
    assert app.sessions_table[marker_key("utterances", 0)] == {"next_offset": 6}


async def test_retired_session_is_deleted_after_its_grace_period(app, rec, utterance_factory, clock):
    s, other = utterance_factory("s1"), utterance_factory("s2")
    async with app.monitor_agent.test_context() as agent:
        await put(agent, *a_session(s))
        await until(lambda: rec.on("session-summaries"))
        await app.source_gate.write()
        tombstone = app.sessions_table["s1"]
        assert tombstone["ended"] and tombstone["retired_at"] == clock() and tombstone["partition"] == 0
        gate = app.source_gate

        gate.expiry_due = expired_by_partition(list(app.sessions_table.items()), clock.advance(GRACE - 1), GRACE)
        await put(agent, other.therapist("Hello."))
        await until(lambda: gate.decoded.has_unwritten())
        await app.source_gate.write()
        assert app.sessions_table.get("s2") is not None
        assert app.sessions_table.get("s1") is not None  # inside the grace period: kept

        gate.expiry_due = expired_by_partition(list(app.sessions_table.items()), clock.advance(1), GRACE)
        await put(agent, other.client("Hi."))
        await until(lambda: gate.decoded.has_unwritten())
        await app.source_gate.write()
        assert app.sessions_table.get("s1") is None
    assert any(k == "s1" and v is None for _, k, v in rec.changelog)  # a changelog tombstone: compaction drops the key
    assert app.sessions_table["s2"]["n_utterances"] == 2


async def test_a_session_applied_in_several_batches_is_written_once_per_commit(app, rec, utterance_factory):
    s = utterance_factory("s1")
    msgs = a_session(s)
    async with app.monitor_agent.test_context() as agent:
        await put(agent, *msgs[:2])
        await until(lambda: app.source_gate.decoded.has_unwritten())
        await asyncio.sleep(0.05)  # the next messages land in later batches
        await put(agent, *msgs[2:4])
        await until(lambda: app.source_gate.decoded.get("s1", lambda sid: None).n_utterances == 3)
        assert rec.changelog == []
        await app.source_gate.write()
        await app.source_gate.write()  # nothing new: nothing written
    assert [k for _, k, _ in rec.changelog] == ["s1", marker_key("utterances", 0)]
    assert rec.changelog[0][2]["n_utterances"] == 3 and rec.changelog[1][2] == {"next_offset": 4}


async def test_a_write_that_fails_leaves_its_states_to_the_next_write_and_no_marker(app, rec, utterance_factory):
    s = utterance_factory("s1")
    table = app.sessions_table
    async with app.monitor_agent.test_context() as agent:
        await put(agent, *a_session(s))
        await until(lambda: rec.on("session-summaries"))

        async def broker_refuses():
            raise RuntimeError("changelog produce failed")
        table.changelog_written = broker_refuses  # the broker does not acknowledge the states
        with pytest.raises(RuntimeError):
            await app.source_gate.write()
        del table.changelog_written
        assert not any(is_marker_key(k) for _, k, _ in rec.changelog)  # no marker over unacknowledged states
        assert app.source_gate.decoded.has_unwritten()
        await app.source_gate.write()
    keys = [k for _, k, _ in rec.changelog]
    assert keys == ["s1", "s1", marker_key("utterances", 0)]
    assert table["s1"]["ended"] and table[marker_key("utterances", 0)] == {"next_offset": 5}
