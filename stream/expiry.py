"""When a retired session's tombstone leaves the table. Pure: the caller passes the clock.

A session that ended keeps a tombstone (seq, counts, ``ended``) so that a late redelivery is still
recognised as a duplicate. After ``grace_s`` it is deleted (a table ``del``: a changelog tombstone,
so compaction drops the key everywhere). The table stores, beside the retired state, when it was
retired and which source partition it belongs to (the changelog partition its deletion must go to).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

RETIRED_AT = "retired_at"
PARTITION = "partition"
TABLE_FIELDS = (RETIRED_AT, PARTITION)  # stored beside the session state, not part of it


def with_retirement(state_json: dict, retired_at: float, partition: int) -> dict:
    """The table value of a session that just ended."""
    return {**state_json, RETIRED_AT: retired_at, PARTITION: partition}


def session_fields(value: Mapping) -> dict:
    """The session state part of a table value (drops the table's own fields)."""
    return {k: v for k, v in value.items() if k not in TABLE_FIELDS}


def is_expired(value: Mapping | None, now: float, grace_s: float) -> bool:
    """A retired session whose grace period is over. A tombstone without a retirement time (written
    before it was recorded) is kept: it cannot be told apart from one retired a moment ago."""
    if not value or not value.get("ended"):
        return False
    retired_at = value.get(RETIRED_AT)
    return retired_at is not None and now - float(retired_at) >= grace_s


def expired_by_partition(items: Iterable[tuple[object, Mapping | None]], now: float,
                         grace_s: float) -> dict[int, list[str]]:
    """Session ids due for deletion, grouped by their source partition."""
    due: dict[int, list[str]] = {}
    for key, value in items:
        if isinstance(key, str) and value and is_expired(value, now, grace_s) and value.get(PARTITION) is not None:
            due.setdefault(int(value[PARTITION]), []).append(key)
    return due
