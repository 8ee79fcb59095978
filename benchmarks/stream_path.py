"""The stream path alone: how many utterances/s one worker processes when the model costs nothing.

Starts tansu, fills the utterances topic with N demo sessions (cloned; every message of every session,
sent before the worker starts), then starts ONE worker whose classifier is a stub defined in this file
(deterministic probabilities from a hash of the therapist turn, no I/O) and times how long it takes to
process the backlog: windowing, validation, session state in the table (RocksDB + changelog), events,
nudges and summaries to their topics, offsets committed. The stub exists only in this benchmark; the
worker is otherwise the production one (``create_app``).

  python benchmarks/stream_path.py --sessions 400
  python benchmarks/stream_path.py --sessions 400 --profile 20      # + py-spy top functions of the worker

Prints JSON: utterances/s and messages/s over the backlog, worker RSS, summaries/events counted from the
worker's own metrics, and (with --profile) the top functions by own time.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # a checkout without an install
sys.path.append(str(Path(__file__).resolve().parent))  # the sibling benchmark whose helpers it shares

import numpy as np  # noqa: E402
from stream_latency import counter_sum as counter  # noqa: E402
from stream_latency import rss_mb  # noqa: E402

from homework_monitor.stream.schemas import CLASSES  # noqa: E402


class HashStubClassifier:
    """Answers like a model, instantly: about one microdialogue in ten is homework (p 0.9)."""

    model_version = "benchmark-stub"

    async def start(self) -> None:
        return None

    async def is_ready(self) -> bool:
        return True

    async def classify(self, items) -> np.ndarray:
        out = np.full((len(items), len(CLASSES)), 0.02, dtype=np.float32)
        for i, ex in enumerate(items):
            h = hashlib.blake2b(ex.therapist.encode(), digest_size=2).digest()[0]
            if h < 26:
                out[i, h % (len(CLASSES) - 1)] = 0.92
            else:
                out[i, CLASSES.index("none")] = 0.92
        return out

    async def close(self) -> None:
        return None


def run_stub_worker() -> None:
    """The worker process: the production app (settings from HWM_*), the stub as its classifier."""
    import logging

    from faust import Worker

    from homework_monitor import logsafe
    from homework_monitor.stream import app as worker_app
    from homework_monitor.stream.config import Settings
    settings = Settings()
    if hasattr(worker_app, "use_event_loop"):  # a revision before it (stream_path_ab.sh) ran on asyncio's loop
        worker_app.use_event_loop(settings)
    create_app = worker_app.create_app
    logsafe.install()
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(settings, classifier=HashStubClassifier())
    Worker(app, loglevel="INFO", quiet=True).execute_from_commandline()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def py_spy_top(pid: int, seconds: int, out: Path) -> dict:
    """Own-time share per function of the worker, from py-spy's raw (collapsed-stack) output."""
    raw = out / "worker.pyspy.txt"
    subprocess.run([str(Path(sys.executable).with_name("py-spy")), "record", "-p", str(pid), "-d", str(seconds), "-r", "100", "-f", "raw",
                    "-o", str(raw), "--nonblocking"], check=True, capture_output=True)
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        # "func (file.py:123)" -> "func (file.py)": one row per function, not per line
        frames = [f.rsplit(":", 1)[0] + ")" if f.endswith(")") else f for f in stack.split(";")]
        own[frames[-1]] = own.get(frames[-1], 0) + int(n)
        for f in set(frames):
            inclusive[f] = inclusive.get(f, 0) + int(n)
        total += int(n)
    top = sorted(own.items(), key=lambda kv: -kv[1])[:20]
    return {"samples": total,
            "own": [{"function": f, "share": round(n / total, 4)} for f, n in top],
            "inclusive": [{"function": f, "share": round(n / total, 4)}
                          for f, n in sorted(inclusive.items(), key=lambda kv: -kv[1])[:40]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=400)
    p.add_argument("--batch-size", type=int, default=None, help="HWM_BATCH_SIZE for the worker (default: settings)")
    p.add_argument("--profile", type=int, default=0, help="seconds of py-spy sampling of the worker")
    p.add_argument("--timeout", type=float, default=600)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        run_stub_worker()
        return
    from homework_monitor.deploy.local_stack import Ports, start_broker, wait_for_log, worker_env
    from homework_monitor.deploy.services import ServiceStack
    from homework_monitor.producers.replay import demo_sessions_dir, make_producer, read_sessions, schedule
    from homework_monitor.stream.config import Settings

    base = read_sessions([demo_sessions_dir()])
    copies = -(-a.sessions // len(base))
    msgs = schedule(base, 1e9, 0.0, copies)  # every message, in session order; times are irrelevant here
    keep = set(sorted({m.key for m in msgs}, key=lambda k: (int(k.rsplit("#", 1)[1]), k))[: a.sessions])
    msgs = [m for m in msgs if m.key in keep]
    n_utt = sum(m.kind == "utterance" for m in msgs)
    run_dir = Path(tempfile.mkdtemp(prefix="hwm-streampath-"))
    log_dir = run_dir / "logs"
    ports = Ports.free()
    settings = Settings(run_dir=run_dir, app_id="hwm-streampath")
    result: dict = {}
    try:
        with ServiceStack() as stack:
            settings = start_broker(stack, settings, ports, log_dir)
            producer = make_producer(settings)
            t0 = time.time()
            for m in msgs:
                producer.send(settings.topics.utterances, key=m.key.encode(), value=m.value)
            producer.flush()
            produce_s = time.time() - t0
            env = worker_env(settings, "worker-1", ports.worker_metrics)
            if a.batch_size:
                env["HWM_BATCH_SIZE"] = str(a.batch_size)
            log = log_dir / "worker-1.log"
            stack.add("worker-1", [sys.executable, "-P", str(Path(__file__).resolve()), "--worker"], env, log,
                      lambda: wait_for_log(log, "classifier ready", 90), cwd=run_dir)
            pid = stack["worker-1"].pid
            url = f"http://127.0.0.1:{ports.worker_metrics}/metrics"
            first = last = None
            done = 0.0
            rss = []
            profile = None
            deadline = time.time() + a.timeout
            while time.time() < deadline:
                text = urllib.request.urlopen(url, timeout=10).read().decode()
                done = counter(text, "hwm_utterances_total{")
                now = time.time()
                if done > 0 and first is None:
                    first = (now, done)
                    cpu_first = {name: cpu_s(stack[name].pid) for name in ("worker-1", "tansu")}
                rss.append(rss_mb(pid))
                if a.profile and profile is None and first is not None:
                    profile = py_spy_top(pid, a.profile, run_dir)
                    continue
                if done >= n_utt + 2 * len(keep):  # utterances plus session start/end records
                    last = (now, done)
                    cpu_last = {name: cpu_s(stack[name].pid) for name in ("worker-1", "tansu")}
                    break
                time.sleep(0.2)
            metrics = urllib.request.urlopen(url, timeout=10).read().decode()
            if last is None:
                raise SystemExit(f"timed out: {done:.0f} of {n_utt + 2 * len(keep)} inputs processed")
            span = last[0] - first[0]
            processed = last[1] - first[1]
            result = {
                "command": " ".join(["python", "benchmarks/stream_path.py", *sys.argv[1:]]),
                "machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.machine()}, "
                           f"load {os.getloadavg()[0]:.2f}/{os.getloadavg()[1]:.2f}/{os.getloadavg()[2]:.2f}",
                "sessions": len(keep), "utterances": n_utt, "inputs": len(msgs), "produce_s": round(produce_s, 2),
                "inputs_per_s": round(processed / span, 1),
                "utterances_per_s": round(processed / span * n_utt / len(msgs), 1),
                "backlog_s": round(span, 2),
                "outcomes": {line.split("{")[1].split("}")[0]: float(line.split()[-1])
                             for line in metrics.splitlines() if line.startswith("hwm_utterances_total{")},
                "microdialogues": counter(metrics, "hwm_microdialogues_total "),
                "events": counter(metrics, "hwm_homework_events_total{"),
                "summaries": counter(metrics, "hwm_session_summaries_total{"),
                # cores busy over the backlog: what the worker itself costs vs the broker beside it
                "cores_busy": {name: round((cpu_last[name] - cpu_first[name]) / span, 2) for name in cpu_last},
                "worker_rss_mb": {"max": round(max(rss), 1), "end": round(rss[-1], 1)},
                "batch_size": int(env.get("HWM_BATCH_SIZE", settings.batch_size)),
            }
            if profile:
                result["worker_profile_top_own_time"] = profile
    finally:
        if a.profile and (run_dir / "worker.pyspy.txt").exists():
            shutil.copy(run_dir / "worker.pyspy.txt", Path(tempfile.gettempdir()) / "stream_path.pyspy.txt")
        shutil.rmtree(run_dir, ignore_errors=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
