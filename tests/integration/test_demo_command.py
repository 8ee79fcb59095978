"""The README's main command, end to end: `homework-monitor demo` on free ports."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from homework_monitor.deploy.services import free_port
from homework_monitor.producers.replay import demo_sessions_dir

REPO_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_demo_runs_every_session_to_its_summary_and_stops_cleanly(tmp_path):
    triton = free_port()
    while any(_busy(p) for p in (triton + 1, triton + 2)):
        triton = free_port()
    web_port = free_port()
    cmd = [sys.executable, "-m", "homework_monitor.cli", "demo", "--speed", "40", "--stagger", "0.2",
           "--kafka-port", str(free_port()), "--triton-port", str(triton), "--metrics-port", str(free_port()),
           "--web-port", str(web_port)]
    env = {**os.environ, "HWM_RUN_DIR": str(tmp_path)}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = re.search(r"(\d+) homework events, (\d+)/(\d+) summaries \((\d+) with homework\), (\d+) nudges "
                  r"\(([^)]*)\), (\d+) dead letters", proc.stdout)
    assert m, proc.stdout[-2000:]
    events, got, want, with_hw, n_nudges, dead = (int(m.group(i)) for i in (1, 2, 3, 4, 5, 7))
    expected = json.loads((demo_sessions_dir() / "EXPECTED.json").read_text())
    assert got == want == len(expected) == 14 and dead == 0
    assert with_hw == sum(1 for xs in expected.values() if any("category" in x for x in xs)) == 11
    assert events >= sum(1 for xs in expected.values() for x in xs if "category" in x)
    # the follow-up pairs: each client's second session is reminded of the first one's homework, and the
    # short check-in without homework gets its "no homework yet" nudge before it ends; nothing else nudges
    nudges = re.findall(r"NUDGE\S*\s+(\S+)\s+(\S+)", proc.stdout)  # (session, rule)
    assert sorted(nudges) == [("demo-followup-health-2", "no_homework_yet"),
                              ("demo-followup-health-2", "review_previous"),
                              ("demo-followup-mood-2", "review_previous")], proc.stdout[-3000:]
    assert n_nudges == len(nudges)
    stored = re.search(r"store: (\d+) sessions with summaries, (\d+) homework events, (\d+) nudges", proc.stdout)
    # the printer stops at the last summary, possibly before it has read every event: the store has them all
    assert stored and int(stored.group(1)) == got and int(stored.group(2)) >= events, proc.stdout[-2000:]
    assert (tmp_path / "demo" / "store.sqlite3").exists() and (tmp_path / "demo" / "logs" / "sink.log").exists()
    # The web app ran beside it, and the demo said where and how to log in.
    assert f"web app          http://127.0.0.1:{web_port}/  demo login: therapist1 / homework-demo" in proc.stdout
    assert "GET /healthz" in (tmp_path / "demo" / "logs" / "web.log").read_text()
    for name in ("tansu.log", "tritonserver.log", "worker-1.log", "web.log"):
        assert (tmp_path / "demo" / "logs" / name).exists()
    assert "stopped tansu" in proc.stderr


def _busy(port: int) -> bool:
    import socket
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0
