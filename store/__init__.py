"""The clinicians' store: what the therapist panel and the supervisor view read.

``models`` (SQLAlchemy 2 tables), ``db`` (engine, Alembic migrations, ``Store``), ``ingest`` (idempotent
writes of the wire messages), ``sink`` (the Kafka consumer that feeds it), ``queries`` (the read API and
clinician feedback), ``access`` (viewers and their scope, login sessions, the audit log) and
``retention`` (the purge). See docs/STORE.md.
"""
