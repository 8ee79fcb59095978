"""Alembic environment: migrations run on the connection ``db.upgrade_schema`` hands over (inside its
transaction and migration lock), or on ``sqlalchemy.url`` when the ``alembic`` command is used directly."""
from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from homework_monitor.store.models import Base

config = context.config


def run(connection) -> None:
    # render_as_batch: SQLite alters tables by copying them; Alembic's batch mode does that for us.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them against the database")
connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                poolclass=pool.NullPool)
    with engine.begin() as conn:
        run(conn)
