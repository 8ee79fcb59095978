"""Alembic migrations of the store: one linear chain in ``versions/`` (run by ``db.upgrade_schema``)."""
