"""Every row of every store table, comparable across runs (autoincrement ids left out)."""
from __future__ import annotations

from sqlalchemy import select

from homework_monitor.store.db import Store
from homework_monitor.store.models import Base


def snapshot(store: Store) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {}
    with store.session() as db:
        for table in Base.metadata.sorted_tables:
            cols = [c for c in table.columns if not (c.primary_key and c.autoincrement is True)]
            rows = db.execute(select(*cols)).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out
