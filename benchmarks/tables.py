"""Markdown tables for benchmarks/RESULTS.md from stream_latency.py's JSON (so no figure is copied by hand).

  python benchmarks/tables.py benchmarks/results/stream_latency-sweep.json benchmarks/results/stream_latency-500-2instances.json
  python benchmarks/tables.py --soak benchmarks/results/stream_latency-soak-bounded.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _ms(d: dict | None, q: str) -> str:
    return f"{d[q]:,.0f}" if d else "–"


def sweep_table(runs: list[dict]) -> str:
    rows = ["| sessions live | utterances/s | microdialogues/s | p50 / p95 / p99 ms | Triton batch (mean) | "
            "Triton compute / queue per request ms | worker RSS MB (max) | tritonserver RSS MB (max) | "
            "consumer lag, records (max) | Kafka→worker p99 ≤ ms | inputs = outcomes |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        w, lat = r["where_time_goes"], r["latency_ms"]
        rows.append(
            f"| {r['sessions']:,} | {r['utterances_per_s']} | {r['microdialogues_per_s']} "
            f"| {_ms(lat, 'p50')} / {_ms(lat, 'p95')} / **{_ms(lat, 'p99')}** | {w['triton_batch_mean']} "
            f"| {w['triton_compute_us_per_request'] / 1000:.1f} / {w['triton_queue_us_per_request'] / 1000:.1f} "
            f"| {r['worker_rss_mb']['max']} | {r['triton_rss_mb']['max']} | {r['consumer_lag_records']['max']} "
            f"| {r['inbound_lag_kafka_to_worker'].get('p99_le_ms', '–')} "
            f"| {r['accounting']['in']:,} = {r['accounting']['accounted']:,.0f}{'' if r['accounting']['balanced'] else ' ✗'} |")
    return "\n".join(rows)


def soak_table(run: dict, every_min: float = 2.0) -> str:
    rows = ["| minute | worker RSS MB | tritonserver RSS MB | consumer lag (records) |", "|---|---|---|---|"]
    next_t = 0.0
    for s in run["samples"]:
        if s["t_s"] / 60 >= next_t or s is run["samples"][-1]:
            rows.append(f"| {s['t_s'] / 60:.1f} | {s['worker_rss_mb']} | {s['triton_rss_mb']} | {s['lag_records']} |")
            next_t += every_min
    acc = run["accounting"]
    rows += ["", f"Inputs: {acc['in']:,} records on the topic ({acc['sent']:,} sent by the replay + "
                 f"{acc['checks_sent']:,.0f} checks sent by the worker) = {acc['accounted']:,.0f} outcomes "
                 f"({', '.join(f'{k} {v:,.0f}' for k, v in sorted(acc['outcomes'].items()))}): "
                 f"{'balanced' if acc['balanced'] else 'NOT balanced'}. Latency p50 / p95 / p99 "
                 f"{_ms(run['latency_ms'], 'p50')} / {_ms(run['latency_ms'], 'p95')} / {_ms(run['latency_ms'], 'p99')} ms "
                 f"over {run['events']:,} events; {run['session_ids']:,} sessions in all."]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweeps", nargs="*", type=Path)
    p.add_argument("--soak", type=Path)
    a = p.parse_args(argv)
    out = []
    for path in a.sweeps:
        runs = json.loads(path.read_text())
        out.append(f"`{runs[0]['command']}` — {runs[0]['machine']}\n\n{sweep_table(runs)}")
    if a.soak:
        run = json.loads(a.soak.read_text())[-1]
        out.append(f"`{run['command']}` — {run['machine']}\n\n{soak_table(run)}")
    text = "\n\n".join(out)
    print(text)
    return text


if __name__ == "__main__":
    main()
