"""benchmarks/plots.py draws RESULTS.md's figures from stream_latency.py's JSON (hand-made runs here)."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def plots():
    spec = importlib.util.spec_from_file_location("bench_plots", ROOT / "benchmarks" / "plots.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(sessions, p50, samples=()):
    return {"sessions": sessions, "duration_s": 600, "latency_ms": {"p50": p50, "p95": p50 * 1.5, "p99": p50 * 2},
            "samples": list(samples)}


def test_both_figures_are_written_as_png(plots, tmp_path):
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps([run(500, 90), run(50, 40), run(200, 60)]))
    soak = tmp_path / "soak.json"
    soak.write_text(json.dumps([run(200, 60, [{"t_s": t, "worker_rss_mb": 120.0, "triton_rss_mb": 900.0,
                                               "lag_records": None if t == 10 else 3} for t in (5, 10, 15)])]))
    written = plots.main(["--sweep", str(sweep), "--soak", str(soak), "--out", str(tmp_path / "out")])
    assert [p.name for p in written] == ["latency_vs_sessions.png", "soak_rss.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000


def test_a_run_without_events_is_left_out_of_the_latency_plot(plots, tmp_path):
    no_events = {"sessions": 1000, "duration_s": 60, "latency_ms": None, "samples": []}
    path = plots.latency_vs_sessions([run(50, 40), no_events], tmp_path)
    assert path.exists()
