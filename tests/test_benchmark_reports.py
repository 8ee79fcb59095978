"""benchmarks/plots.py and tables.py turn stream_latency.py's JSON into RESULTS.md's figures and tables
(hand-made runs here)."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def plots():
    return load("plots")


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


def full_run(sessions, balanced=True):
    return {"command": "python benchmarks/stream_latency.py", "machine": "test", "sessions": sessions,
            "session_ids": sessions, "utterances_per_s": 5.0, "microdialogues_per_s": 2.5, "events": 7,
            "latency_ms": {"p50": 70.2, "p95": 90.0, "p99": 95.7},
            "where_time_goes": {"triton_batch_mean": 1.2, "triton_compute_us_per_request": 25389.5,
                                "triton_queue_us_per_request": 2144.7},
            "worker_rss_mb": {"max": 114.6}, "triton_rss_mb": {"max": 245.8}, "consumer_lag_records": {"max": 3},
            "inbound_lag_kafka_to_worker": {"p99_le_ms": 50.0},
            "accounting": {"in": 1200, "sent": 1150, "checks_sent": 50.0, "outcomes": {"ok": 1000.0, "control": 200.0},
                           "accounted": 1200.0 if balanced else 1199.0, "balanced": balanced},
            "samples": [{"t_s": t, "worker_rss_mb": 112.0, "triton_rss_mb": 240.0, "lag_records": 0} for t in range(0, 300, 10)]}


def test_tables_carry_every_figure_and_flag_unbalanced_accounting(tmp_path):
    tables = load("tables")
    sweep = tmp_path / "sweep.json"
    sweep.write_text(json.dumps([full_run(50), full_run(200, balanced=False)]))
    soak = tmp_path / "soak.json"
    soak.write_text(json.dumps([full_run(200)]))
    text = tables.main([str(sweep), "--soak", str(soak)])
    assert "| 50 | 5.0 | 2.5 | 70 / 90 / **96** | 1.2 | 25.4 / 2.1 | 114.6 | 245.8 | 3 | 50.0 | 1,200 = 1,200 |" in text
    assert "1,200 = 1,199 ✗" in text
    assert "1,150 sent by the replay + 50 checks" in text and ": balanced." in text
    assert text.count("| 0.0 |") == 1 and "| 2.0 |" in text and "| 4.8 |" in text  # every 2 minutes, and the last
