"""Engine, migrations and transactions: ``Store.open(settings)`` is how every process gets the store.

The URL is ``HWM_STORE_URL`` (a SQLAlchemy URL, e.g. ``postgresql+psycopg://user:pw@host/db``) or, by
default, a SQLite file ``<HWM_RUN_DIR>/store.sqlite3``. ``Store.open`` brings the schema to the newest
Alembic revision first (``migrate=False`` to skip; ``homework-monitor store migrate`` does only that), so a
new release migrates at the start of whichever process comes first; concurrent starts are serialised
(a PostgreSQL advisory lock, a file lock beside a SQLite file).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from homework_monitor.stream.config import Settings

log = logging.getLogger(__name__)

MIGRATIONS = "homework_monitor.store:migrations"  # shipped in the package, so an installed wheel migrates
# pg_advisory_xact_lock key for migrations: any constant unique to this application.
MIGRATION_LOCK_KEY = 0x68776D5F6D6967  # "hwm_mig"
SQLITE_FILE = "store.sqlite3"


def store_url(settings: Settings) -> URL:
    """The configured URL, or the default SQLite file under the run dir."""
    if settings.store.url is not None:
        return make_url(settings.store.url.get_secret_value())
    return URL.create("sqlite+pysqlite", database=str((settings.run_dir / SQLITE_FILE).resolve()))


def safe_url(url: URL) -> str:
    """The URL without its password, for logs and messages."""
    return url.render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    # WAL: the web app reads while the sink writes; foreign keys: cascades work as on PostgreSQL;
    # a writer waits for the other process's transaction instead of failing at once.
    cur = dbapi_connection.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def make_engine(url: URL | str) -> Engine:
    url = make_url(url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # pool_pre_ping: a database restarted under a long-running sink or web app is reconnected.
    return create_engine(url, pool_pre_ping=True)


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        # SQLite runs DDL outside transactions here: two processes migrating at once would both try
        # to create the tables. A lock file beside the database serialises them.
        lock_path = Path(f"{engine.url.database}.migrate.lock")
        with open(lock_path, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
    else:
        yield


def upgrade_schema(engine: Engine, revision: str = "head") -> str | None:
    """Upgrade the schema to ``revision`` (default: the newest); returns the revision now in place."""
    with _migration_lock(engine), engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            # Held until this transaction ends; PostgreSQL runs the migrations' DDL inside it.
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    now = current_revision(engine)
    log.info("store schema at revision %s (%s)", now, safe_url(engine.url))
    return now


class Store:
    """The engine and a session factory. ``with store.session() as db:`` is one transaction: committed
    when the block ends, rolled back if it raises."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @classmethod
    def open(cls, settings: Settings | None = None, *, url: URL | str | None = None, migrate: bool = True) -> Store:
        engine = make_engine(url if url is not None else store_url(settings or Settings()))
        if migrate:
            upgrade_schema(engine)
        return cls(engine)

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as db:
            yield db

    def close(self) -> None:
        self.engine.dispose()
