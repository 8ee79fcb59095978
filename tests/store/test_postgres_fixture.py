"""Where PostgreSQL is absent the store tests skip, saying why; in CI (CI=true) they fail instead."""
from __future__ import annotations

import pytest

from .. import postgres


def test_missing_postgresql_skips_with_a_reason_but_fails_in_ci(monkeypatch):
    monkeypatch.setattr(postgres, "BIN_GLOB", "/nonexistent/*/bin")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="in CI both databases must be tested"):
        postgres.postgres_or_skip()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception, match="PostgreSQL is not installed"):
        postgres.postgres_or_skip()
