"""PNG plots for benchmarks/RESULTS.md from stream_latency.py's JSON output.

  python benchmarks/plots.py --sweep benchmarks/results/stream_latency-sweep.json \
      --soak benchmarks/results/stream_latency-soak-bounded.json \
      --soak-baseline benchmarks/results/stream_latency-soak-rocksdb-defaults.json --baseline-label "faust's RocksDB defaults" \
      --out benchmarks/results

  python benchmarks/plots.py --compare "CPU student (1 encoder pass)=benchmarks/results/stream_latency-student-sweep.json" \
      --compare "default model (2 passes)=benchmarks/results/stream_latency-teacher-sweep.json" --out benchmarks/results

Writes latency_vs_sessions.png (p50/p95/p99 utterance→event against concurrent sessions, with the
300 ms target), soak_rss.png (worker and tritonserver RSS, and consumer lag, over the soak) and
p99_by_model.png (p99 against sessions, one line per labelled sweep).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

TARGET_P99_MS = 300


def latency_vs_sessions(runs: list[dict], out: Path) -> Path:
    runs = sorted((r for r in runs if r.get("latency_ms")), key=lambda r: r["sessions"])
    x = [r["sessions"] for r in runs]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for q, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-")):
        ax.plot(x, [r["latency_ms"][q] for r in runs], style, label=q)
    ax.set_xscale("log")
    ax.set_xticks(x, [str(v) for v in x])
    return _latency_figure(fig, ax, "utterance → homework event (ms)", "Latency against load",
                           out / "latency_vs_sessions.png")


def _latency_figure(fig, ax, ylabel: str, title: str, path: Path) -> Path:
    """The latency plots' common finish: the p99 target line, log latency axis, labels, written to ``path``."""
    ax.axhline(TARGET_P99_MS, color="grey", linestyle="--", linewidth=1, label=f"p99 target {TARGET_P99_MS} ms")
    ax.set_yscale("log")
    ax.set_xlabel("concurrent real-pace sessions (one worker, CPU Triton, 2 cores)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def p99_by_model(sweeps: dict[str, list[dict]], out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for label, runs in sweeps.items():
        runs = sorted((r for r in runs if r.get("latency_ms")), key=lambda r: r["sessions"])
        ax.plot([r["sessions"] for r in runs], [r["latency_ms"]["p99"] for r in runs], "o-", label=label)
    return _latency_figure(fig, ax, "p99 utterance → homework event (ms)", "p99 latency by served model",
                           out / "p99_by_model.png")


def soak_rss(run: dict, out: Path, baseline: dict | None = None, baseline_label: str = "before") -> Path:
    samples = run["samples"]
    t = [s["t_s"] / 60 for s in samples]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    if baseline:
        ax.plot([s["t_s"] / 60 for s in baseline["samples"]], [s["worker_rss_mb"] for s in baseline["samples"]],
                linestyle="--", color="tab:blue", alpha=0.5, label=f"worker RSS, {baseline_label}")
    ax.plot(t, [s["worker_rss_mb"] for s in samples], color="tab:blue", label="worker RSS")
    ax.plot(t, [s["triton_rss_mb"] for s in samples], color="tab:orange", label="tritonserver + stub RSS")
    ax.set_xlabel("minutes")
    ax.set_ylabel("MB")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Soak: {run['sessions']} real-pace sessions, {run['duration_s'] / 60:.0f} minutes")
    lag = ax.twinx()
    lag.plot(t, [s["lag_records"] or 0 for s in samples], color="grey", linewidth=0.6, alpha=0.6, label="consumer lag")
    lag.set_ylabel("consumer lag (records)")
    lag.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    more = lag.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=8)
    fig.tight_layout()
    path = out / "soak_rss.png"
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sweep", type=Path)
    p.add_argument("--soak", type=Path)
    p.add_argument("--soak-baseline", type=Path, help="an earlier soak whose worker RSS is drawn dashed")
    p.add_argument("--baseline-label", default="before")
    p.add_argument("--compare", action="append", default=[], metavar="LABEL=SWEEP_JSON",
                   help="a sweep to draw in p99_by_model.png (repeat)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    written = []
    if a.sweep:
        written.append(latency_vs_sessions(json.loads(a.sweep.read_text()), a.out))
    if a.soak:
        baseline = json.loads(a.soak_baseline.read_text())[-1] if a.soak_baseline else None
        written.append(soak_rss(json.loads(a.soak.read_text())[-1], a.out, baseline, a.baseline_label))
    if a.compare:
        sweeps = {label: json.loads(Path(path).read_text())
                  for label, _, path in (c.partition("=") for c in a.compare)}
        written.append(p99_by_model(sweeps, a.out))
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    main()
