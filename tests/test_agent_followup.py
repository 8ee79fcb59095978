"""The worker's agents under ``test_context()``: the new outputs (session-opened, nudges, summaries keyed
by client) and the client history agent writing the GlobalTable that the next session reads."""
from __future__ import annotations

import json

from homework_monitor.stream.followup import history_of

from .test_agent import app, put_all, wait_for  # noqa: F401 - fixtures and helpers

HISTORY_TOPIC = "homework-monitor-summaries-by-client"


async def test_a_session_is_announced_nudged_and_its_summary_rekeyed_by_client(app, sent, utterance_factory):  # noqa: F811
    s = utterance_factory("s1", therapist_id="t-1", client_id="c-1", scheduled_minutes=10)
    msgs = [s.start(), s.therapist("How are you today?", start_s=290.0), s.client("Fine.", start_s=295.0),
            s.therapist("Good to hear.", start_s=305.0), s.client("Yes.", start_s=310.0), s.end()]
    async with app.monitor_agent.test_context() as agent:
        await put_all(agent, msgs)  # one batch, end included: what was due before the end still fires
        await wait_for(agent, lambda: sent.on("session-summaries"))
    (opened,) = sent.on("session-opened")
    assert (opened["session_id"], opened["client_id"], opened["scheduled_minutes"]) == ("s1", "c-1", 10)
    assert [n["rule"] for n in sent.on("nudges")] == ["no_homework_yet"]  # 5:00 passed at 5:05
    (summary,) = sent.on("session-summaries")
    assert summary["scheduled_minutes"] == 10 and summary["started_at"] == opened["started_at"]
    rekeyed = [(k, json.loads(v)) for t, k, v in sent.records if t == HISTORY_TOPIC]
    assert rekeyed == [(b"c-1", summary)]  # keyed by client: one writer per client


async def test_the_history_agent_records_each_summary_as_the_clients_latest(app, sent, utterance_factory):  # noqa: F811
    s = utterance_factory("s1", client_id="c-1")
    async with app.monitor_agent.test_context() as agent:
        await put_all(agent, [s.start(), s.therapist("Please write down three good moments."), s.client("Sure."),
                              s.end()])
        await wait_for(agent, lambda: sent.on("session-summaries"))
    (summary,) = sent.on("session-summaries")
    table = app.client_history_table
    async with app.client_history_agent.test_context() as history_agent:
        for _ in range(2):  # a redelivery changes nothing
            await history_agent.put(key=b"c-1", value=json.dumps(summary).encode())
        await wait_for(history_agent, lambda: table.get("c-1") is not None)
    history = history_of(table["c-1"])
    assert [p.session_id for p in history.sessions] == ["s1"]
    assert [a.category for a in history.sessions[0].assignments] == ["journal"]
    assert any(t.endswith("client_history-changelog") for t, _, _ in sent.changelog)
