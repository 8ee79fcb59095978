"""A tiny process supervisor for the demo command and integration tests.

Each service runs in its own session (process group), its stdout and stderr go to one log file,
and stopping sends SIGTERM to the whole group, then SIGKILL after a timeout. This module logs
only service names, commands' exit codes and paths; never any payload or transcript text.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["ManagedProcess", "ServiceStack", "free_port", "scrubbed_environ"]

log = logging.getLogger(__name__)

# Our secrets (HWM_KAFKA_SASL_PASSWORD, any HWM_*SECRET*/*TOKEN*) and other *_PASSWORD variables. The
# broker and tritonserver (and the Python backend it starts) never need them, and a child process's
# environment is readable by anyone who can read /proc/<pid>/environ or a crash dump.
_SECRET_NAME = re.compile(r"^HWM_.*(PASSWORD|SECRET|TOKEN)|_PASSWORD$|SECRET_?ACCESS", re.IGNORECASE)


def scrubbed_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of ``environ`` (default ``os.environ``) without secrets, for services that need none."""
    source = os.environ if environ is None else environ
    return {k: v for k, v in source.items() if not _SECRET_NAME.search(k)}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the OS picks it; tiny race until the service binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ManagedProcess:
    """One child process with its output in ``log_path``."""

    def __init__(
        self,
        name: str,
        cmd: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.cmd = [str(c) for c in cmd]
        self.log_path = Path(log_path)
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc is not None else None

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.is_running:
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self.log_path.exists():  # keep the previous run's log, start this one empty (readiness greps it)
            self.log_path.replace(self.log_path.with_name(self.log_path.name + ".1"))
        with open(self.log_path, "ab") as out:  # the child keeps its own copy of the descriptor
            self._proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        log.info("started %s (pid %d), log %s", self.name, self._proc.pid, self.log_path)

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, sig)  # pgid == pid thanks to start_new_session
        except ProcessLookupError:
            pass

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout`` s; returns the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop after %.0fs, killing", self.name, timeout)
                self._signal_group(signal.SIGKILL)
                proc.wait()
        # children of the group that outlived the leader (e.g. triton python stubs)
        self._signal_group(signal.SIGKILL)
        log.info("stopped %s (exit code %s)", self.name, proc.returncode)
        return proc.returncode

    def tail(self, n_lines: int = 40) -> str:
        """The last ``n_lines`` lines of the log (for error messages; these are service logs)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 256 * 1024))
                data = f.read()
        except FileNotFoundError:
            return ""
        lines = data.decode("utf-8", errors="replace").splitlines()
        return "\n".join(lines[-n_lines:])


class ServiceStack:
    """Start services in order, each waited for; stop them in reverse order on exit.

    ``ready`` callables block until the service is usable and raise on timeout; if one raises
    (or the process dies first), the error carries the log tail and everything started is stopped.
    """

    def __init__(self, stop_timeout: float = 10) -> None:
        self.stop_timeout = stop_timeout
        self.services: dict[str, ManagedProcess] = {}

    def add(
        self,
        name: str,
        cmd: Sequence[str],
        env: Mapping[str, str] | None,
        log_path: Path,
        ready: Callable[[], None],
        *,
        cwd: Path | None = None,
    ) -> ManagedProcess:
        if name in self.services:
            raise ValueError(f"service {name!r} already added")
        proc = ManagedProcess(name, cmd, log_path, env=env, cwd=cwd)
        self.services[name] = proc
        proc.start()
        t0 = time.monotonic()
        try:
            ready()
        except Exception as exc:
            state = "running" if proc.is_running else f"exited with {proc.returncode}"
            proc.stop(self.stop_timeout)
            raise RuntimeError(
                f"service {name!r} not ready ({state}): {exc}\n--- {proc.log_path} (tail) ---\n{proc.tail(40)}"
            ) from exc
        if not proc.is_running:
            proc.stop(self.stop_timeout)
            raise RuntimeError(
                f"service {name!r} exited with {proc.returncode}\n--- {proc.log_path} (tail) ---\n{proc.tail(40)}"
            )
        log.info("%s ready in %.2fs", name, time.monotonic() - t0)
        return proc

    def __getitem__(self, name: str) -> ManagedProcess:
        return self.services[name]

    def stop_all(self) -> None:
        for proc in reversed(list(self.services.values())):
            try:
                proc.stop(self.stop_timeout)
            except Exception:  # keep stopping the others
                log.exception("failed to stop %s", proc.name)

    def __enter__(self) -> ServiceStack:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()
