"""A real, throwaway PostgreSQL server for tests (Debian's ``postgresql`` package; ``.ci/run`` installs it).

``PostgresServer.start()`` runs ``initdb`` into a fresh temp dir and ``pg_ctl start`` on a free loopback
port (trust authentication, loopback only, socket in the data dir, no fsync); ``stop()`` stops it and
removes the dir. ``create_database()`` gives each test its own empty database.

initdb refuses to run as root. Tests (and CI) do run as root here, so the server then runs as an
unprivileged account (``postgres``, which the Debian package creates; else ``nobody``) through
``runuser``, with its data dir made directly under /tmp (pytest's tmp dirs are private to root) and
owned by that account. Run as any other user, it runs as that user.

``postgres_or_skip()``: where the binaries are absent the tests using it skip, saying why, except in
CI (``CI=true``), where a missing PostgreSQL is a failure: CI must test both databases.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from homework_monitor.deploy.services import free_port

BIN_GLOB = "/usr/lib/postgresql/*/bin"


def postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin dir (``/usr/lib/postgresql/<version>/bin``), or None."""
    dirs = [Path(d) for d in glob.glob(BIN_GLOB) if (Path(d) / "initdb").exists()]
    return max(dirs, key=lambda d: int(d.parent.name) if d.parent.name.isdigit() else 0) if dirs else None


def _run_as() -> str | None:
    """The account to run the server as when we are root (initdb refuses root); None: ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and no unprivileged account (postgres, nobody) to run PostgreSQL as")


class PostgresServer:
    def __init__(self, bindir: Path):
        self.bindir = bindir
        self.user = _run_as()
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="hwm-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"

    def _cmd(self, *args: str) -> list[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        return ["runuser", "-u", self.user, "--", *cmd] if self.user else cmd

    def start(self) -> PostgresServer:
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        subprocess.run(self._cmd("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                                 "--encoding=UTF8", "--locale=C"),
                       check=True, capture_output=True, timeout=120, cwd=self.root)
        return self.resume()

    def resume(self) -> PostgresServer:
        """Start the server (again) on its data dir and port."""
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off")
        res = subprocess.run(self._cmd("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w",
                                       "-t", "60", "start"), capture_output=True, text=True, timeout=90, cwd=self.root)
        if res.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed ({res.returncode}): {res.stderr[-1000:]}\n{log}")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def pause(self) -> None:
        """Stop the server, keeping its data (``resume`` starts it again): a database outage."""
        subprocess.run(self._cmd("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop"),
                       check=True, capture_output=True, timeout=60, cwd=self.root)

    def stop(self) -> None:
        subprocess.run(self._cmd("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"),
                       capture_output=True, timeout=60, cwd=self.root)
        shutil.rmtree(self.root, ignore_errors=True)


def postgres_or_skip() -> Path:
    """The PostgreSQL bin dir; skips the test where it is absent, fails instead in CI."""
    bindir = postgres_bindir()
    if bindir is None:
        reason = (f"PostgreSQL is not installed (no {BIN_GLOB}/initdb; `apt-get install postgresql`, as .ci/run "
                  "does): the PostgreSQL half of the store tests did not run")
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " -- in CI both databases must be tested", pytrace=False)
        pytest.skip(reason)
    return bindir
