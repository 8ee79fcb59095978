"""Idempotent, order-insensitive writes: redelivering everything changes nothing, any order of arrival
ends in the same rows, an event may arrive before its session."""
from __future__ import annotations

import random
from datetime import UTC, datetime

from homework_monitor.store import ingest
from homework_monitor.store.db import Store

from . import data
from .snapshot import snapshot


def apply_all(store: Store, messages) -> None:
    with store.session() as db:
        for m in messages:
            ingest.apply(db, m)


def test_redelivery_changes_nothing(store):
    msgs = data.messages()
    apply_all(store, msgs)
    first = snapshot(store)
    assert len(first["sessions"]) == 10 and len(first["homework_events"]) == 8 and len(first["nudges"]) == 5
    assert len(first["assignments"]) == 7
    apply_all(store, msgs)  # redelivered once in order
    shuffled = msgs * 2
    random.Random(7).shuffle(shuffled)
    apply_all(store, shuffled)  # and twice more, shuffled
    assert snapshot(store) == first


def test_any_order_of_arrival_gives_the_same_rows(db_url, tmp_path):
    msgs = data.messages()
    in_order = Store.open(url=f"sqlite:///{tmp_path / 'in_order.sqlite3'}")
    apply_all(in_order, msgs)
    reversed_store = Store.open(url=db_url)  # each database kind, messages reversed, one per transaction
    try:
        for m in reversed(msgs):
            apply_all(reversed_store, [m])
        assert snapshot(reversed_store) == snapshot(in_order)
    finally:
        reversed_store.close()
        in_order.close()


def test_an_event_before_its_session(store):
    t = data.ts(5, 10)
    apply_all(store, [data.event("a9", 4, "journal", t + 300)])
    with store.session() as db:
        row = db.get(ingest.SessionRow, "a9")
        assert (row.therapist_id, row.program_id, row.opened, row.started_at_exact) == ("T1", "P1", False, False)
        assert row.started_at == datetime.fromtimestamp(t + 300, UTC)
    apply_all(store, [data.opened("a9", t, "c9")])
    with store.session() as db:
        row = db.get(ingest.SessionRow, "a9")
        assert (row.client_id, row.opened, row.started_at_exact) == ("c9", True, True)
        assert row.started_at == datetime.fromtimestamp(t, UTC)
        assert row.last_seen_at == datetime.fromtimestamp(t + 300, UTC)


def test_a_later_summary_replaces_an_earlier_one_whatever_the_order(store):
    t = data.ts(5, 10)
    old = data.summary("a8", t, t + 3000, [data.assignment(3, "journal")])
    new = data.summary("a8", t, t + 3100, [data.assignment(6, "learn")], model="test-model-2")
    apply_all(store, [new, old])  # the newer arrives first: the older must not replace it
    with store.session() as db:
        row = db.get(ingest.SessionRow, "a8")
        assert (row.summary_id, row.categories, row.model_version) == (new.summary_id, ["learn"], "test-model-2")
        assignments = db.query(ingest.AssignmentRow).filter_by(session_id="a8").all()
        assert [(a.turn, a.category) for a in assignments] == [(6, "learn")]
