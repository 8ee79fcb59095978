"""The Alembic chain: one linear chain, upgrades an empty database of each kind to exactly the models'
schema, is a no-op when repeated, and concurrent starts (sink and web together) do not collide."""
from __future__ import annotations

import threading

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from homework_monitor.store.db import (
    Store,
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    upgrade_schema,
)
from homework_monitor.store.models import Base

TABLES = {"sessions", "homework_events", "assignments", "nudges", "feedback", "audit_log", "login_sessions",
          "alembic_version"}


def test_one_linear_chain_shipped_in_the_package():
    scripts = ScriptDirectory.from_config(alembic_config())
    revisions = list(scripts.walk_revisions())
    assert len(scripts.get_heads()) == 1 and len(scripts.get_bases()) == 1
    for rev in revisions:  # no merges, no branches: each revision has at most one parent
        assert not isinstance(rev.down_revision, tuple | list), rev.revision
    # walking down from the head visits every revision once
    assert [r.revision for r in revisions][0] == head_revision()
    assert len({r.revision for r in revisions}) == len(revisions)


def test_upgrade_from_empty_gives_the_models_schema(db_url):
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) is None
        assert upgrade_schema(engine) == head_revision()
        assert set(inspect(engine).get_table_names()) == TABLES
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], diff
        assert upgrade_schema(engine) == head_revision()  # again: nothing to do, no error
    finally:
        engine.dispose()


def test_concurrent_starts_migrate_once(db_url):
    """The sink and the web app may start together: both open the store, neither fails."""
    errors: list[BaseException] = []

    def open_store() -> None:
        try:
            Store.open(url=db_url).close()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
