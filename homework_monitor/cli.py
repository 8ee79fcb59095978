"""``homework-monitor``: the one console script.

  demo        broker + tritonserver + worker + sink + web app + replay of the demo sessions, live output
  worker      the Faust worker (reads HWM_* settings)
  web         the clinicians' web app (HWM_WEB_*; docs/SURFACES.md); --hash-password for a users file
  replay      replay sessions (corpus JSONL schema) into the utterances topic
  topics      create the topics with their partition counts
  classify    microdialogues JSONL -> labels + scores (artifact in process, or --triton-url)
  summarize   sessions JSONL -> one summary per session (same windowing/aggregation as the worker)
  review      export low-confidence predictions on unlabeled sessions for expert review
  evaluate    rebuild Table 1 (homework_monitor.training.table1)
  pretrain    TSDAE + NSP pretraining (homework_monitor.training.pretrain)
  export-model   build the served artifact from a Table 1 row (homework_monitor.training.export)
  export-schemas JSON Schema of every message into schemas/
  sink        the store's sink: events, summaries, nudges, session-opened -> the database (docs/STORE.md)
  store       store maintenance: `store migrate` (schema to the newest revision), `store purge` (retention)
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import traceback
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from homework_monitor import logsafe
from homework_monitor.stream.config import Settings


def _write_jsonl(path: Path, rows) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
            n += 1
    return n


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def make_classifier(settings: Settings, triton_url: str | None, artifact: Path | None):
    """In-process artifact by default; Triton when a URL is given (same probabilities)."""
    from homework_monitor.stream.classifiers import InProcessClassifier, TritonClassifier
    if triton_url:
        return TritonClassifier(settings.model_copy(update={"triton_url": triton_url}))
    return InProcessClassifier(artifact or settings.artifact_dir)


# A multiple of the in-process model's batch (32), so chunking changes no batch and no probability.
PROGRESS_CHUNK = 256


def probs_for(classifier, examples, progress: bool = False):
    """Run an async classifier once from synchronous CLI code: [n, 5] probabilities.

    With ``progress``, a bar on stderr (only on a terminal) counts classified microdialogues."""
    import numpy as np
    from tqdm import tqdm

    async def run():
        await classifier.start()
        try:
            if not progress:
                return await classifier.classify(examples)
            parts = []
            with tqdm(total=len(examples), desc="classify", unit="microdialogue", file=sys.stderr,
                      disable=None, leave=False) as bar:
                for i in range(0, len(examples), PROGRESS_CHUNK):
                    chunk = examples[i:i + PROGRESS_CHUNK]
                    parts.append(await classifier.classify(chunk))
                    bar.update(len(chunk))
            return np.concatenate(parts) if parts else await classifier.classify(examples)
        finally:
            await classifier.close()
    return asyncio.run(run())


# --- offline input: the worker's validation, line by line ----------------------------------------
def rejects_path(output: Path) -> Path:
    """Where refused input lines go: beside the output, ``labels.jsonl`` -> ``labels.rejects.jsonl``."""
    return output.with_name(f"{output.stem}.rejects.jsonl")


class Rejects:
    """Refused input lines: line number, reason and a detail that names fields, never their text."""

    def __init__(self, input_path: Path):
        self.input_path = input_path
        self.rows: list[dict] = []

    def add(self, line_no: int, reason: str, detail: str) -> None:
        self.rows.append({"line": line_no, "reason": reason, "detail": detail})

    def finish(self, output: Path) -> int:
        """Write the rejects file (always, empty when nothing was refused); one line on stderr; exit code."""
        path = rejects_path(output)
        _write_jsonl(path, self.rows)
        if not self.rows:
            return 0
        reasons = Counter(r["reason"] for r in self.rows)
        print(f"error: rejected {len(self.rows)} line(s) of {self.input_path} "
              f"({', '.join(f'{k}: {v}' for k, v in sorted(reasons.items()))}) -> {path}", file=sys.stderr)
        return 2


def iter_lines(path: Path, max_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes without the line break) of each non-blank line; None for a line over
    ``max_bytes``, which is skipped without being held in memory."""
    with open(path, "rb") as fh:
        line_no = 0
        while True:
            line = fh.readline(max_bytes + 2)  # the longest allowed line and its CR LF
            if not line:
                return
            line_no += 1
            content = line.rstrip(b"\r\n")
            if len(content) > max_bytes:
                while line and not line.endswith(b"\n"):  # skip the rest of the long line
                    line = fh.readline(1 << 20)
                yield line_no, None
            elif content.strip():
                yield line_no, content


def read_checked(path: Path, check, rejects: Rejects, *, max_bytes: int, max_text_chars: int,
                 allow_non_finite: bool = False) -> list[tuple[int, Any]]:
    """The lines ``check`` accepts, as (line number, value); the others are recorded in ``rejects``."""
    from homework_monitor.stream.validation import Rejected, parse_line
    good = []
    for line_no, data in iter_lines(path, max_bytes):
        if data is None:
            rejects.add(line_no, "oversized_payload", f"line longer than {max_bytes} bytes")
            continue
        checked = parse_line(data, check, max_bytes=max_bytes, max_text_chars=max_text_chars,
                             allow_non_finite=allow_non_finite)
        if isinstance(checked, Rejected):
            rejects.add(line_no, checked.reason, checked.detail)
        else:
            good.append((line_no, checked.message))
    return good


def read_sessions_checked(path: Path, settings: Settings, rejects: Rejects):
    """Session lines -> [(session_id, utterances)], each utterance validated as the worker does; a
    session with any invalid utterance is refused whole (its line number in ``rejects``)."""
    from homework_monitor.stream.offline import MAX_SESSION_LINE_BYTES, checked_session
    # Corpus files carry NaN in metadata nobody reads; the fields that are read still refuse it.
    return [v for _, v in read_checked(path, checked_session, rejects, max_bytes=MAX_SESSION_LINE_BYTES,
                                       max_text_chars=settings.max_text_chars, allow_non_finite=True)]


def window_checked_sessions(sessions, settings: Settings) -> list:
    from homework_monitor.stream.processor import window_config
    from homework_monitor.stream.windowing import window_session
    cfg = window_config(settings)
    return [window_session(utterances, cfg, sid) for sid, utterances in sessions]


# --- classify / summarize / review -------------------------------------------------------------
def cmd_classify(a, settings: Settings) -> int:
    from homework_monitor.contract import CLASSES, Example
    from homework_monitor.stream.schemas import ClassifyOutput
    from homework_monitor.stream.validation import check_classify_input, classify_line_limit
    rejects = Rejects(a.input)
    rows = [r for _, r in read_checked(a.input, check_classify_input, rejects,
                                       max_bytes=classify_line_limit(settings.max_text_chars),
                                       max_text_chars=settings.max_text_chars)]
    examples = [Example(therapist=r.therapist, client=r.client,
                        context=tuple((t.speaker, t.text) for t in r.context)) for r in rows]
    # Nothing to classify (every line refused, or none): no model to load.
    probs = probs_for(make_classifier(settings, a.triton_url, a.artifact), examples, progress=True) \
        if examples else []
    out = (ClassifyOutput(id=r.id, label=CLASSES[int(p.argmax())],
                          scores={c: round(float(v), 6) for c, v in zip(CLASSES, p)}).model_dump_json()
           for r, p in zip(rows, probs))
    print(f"classified {_write_jsonl(a.output, out)} microdialogues -> {a.output}", file=sys.stderr)
    return rejects.finish(a.output)


def summarize_windowed_sessions(windowed: list, classifier, threshold: float, progress: bool = False,
                                default_scheduled_minutes: int | None = None):
    from homework_monitor.stream.offline import summarize_all
    probs = probs_for(classifier, [m.example() for _, mds in windowed for m in mds], progress=progress)
    return summarize_all(windowed, probs, threshold, classifier.model_version,
                         default_scheduled_minutes=default_scheduled_minutes)


def summarize_corpus_sessions(sessions: list[dict], classifier, threshold: float,
                              settings: Settings | None = None):
    """Summaries of trusted corpus sessions (dicts), as the worker would give them."""
    from homework_monitor.stream.offline import windowed_sessions
    from homework_monitor.stream.processor import window_config
    settings = settings or Settings()
    windowed = list(windowed_sessions(sessions, window_config(settings)))
    return summarize_windowed_sessions(windowed, classifier, threshold,
                                       default_scheduled_minutes=settings.default_scheduled_minutes)


def cmd_summarize(a, settings: Settings) -> int:
    rejects = Rejects(a.input)
    windowed = window_checked_sessions(read_sessions_checked(a.input, settings, rejects), settings)
    threshold = a.threshold if a.threshold is not None else settings.event_threshold
    summaries = summarize_windowed_sessions(windowed, make_classifier(settings, a.triton_url, a.artifact),
                                            threshold, progress=True,
                                            default_scheduled_minutes=settings.default_scheduled_minutes)
    # The live summary's fields (SessionSummary), follow-up included: sessions in file order.
    rows = [s.model_dump() for s in summaries]
    _write_jsonl(a.output, rows)
    print(f"summarized {len(rows)} sessions -> {a.output}", file=sys.stderr)
    if a.truth:
        from homework_monitor.stream.offline import session_metrics
        truth = {d["session_id"]: d["homework"] for d in _read_jsonl(a.truth)}
        m = session_metrics(truth, {r["session_id"]: r["homework_assigned"] for r in rows})
        print(json.dumps({"threshold": threshold, **m}, indent=2))
    return rejects.finish(a.output)


def cmd_review(a, settings: Settings) -> int:
    """Active learning: microdialogues whose top probability is lowest go to expert review."""
    from homework_monitor.stream.schemas import CLASSES
    rejects = Rejects(a.input)
    windowed = window_checked_sessions(read_sessions_checked(a.input, settings, rejects), settings)
    mds = [m for _, ms in windowed for m in ms]
    probs = probs_for(make_classifier(settings, a.triton_url, a.artifact), [m.example() for m in mds],
                      progress=True)
    rows = []
    for md, p in zip(mds, probs):
        top = float(p.max())
        if top < a.max_confidence:
            rows.append({"session_id": md.session_id, "turn": md.turn,
                         "context": [t.model_dump() for t in md.context_turns()],
                         "therapist": md.therapist.text, "client": md.client.text if md.client else None,
                         "predicted": CLASSES[int(p.argmax())], "confidence": round(top, 4),
                         "scores": {c: round(float(v), 4) for c, v in zip(CLASSES, p)}, "label": None})
    rows.sort(key=lambda r: r["confidence"])
    n = _write_jsonl(a.output, rows[: a.limit])
    print(f"{n} of {len(mds)} microdialogues below confidence {a.max_confidence} -> {a.output}", file=sys.stderr)
    return rejects.finish(a.output)


# --- services ----------------------------------------------------------------------------------
def cmd_worker(a, settings: Settings) -> None:
    from homework_monitor.stream.app import run_worker
    sys.argv = [sys.argv[0]]  # faust's command line parser must not see ours
    run_worker(settings)


def cmd_web(a, settings: Settings) -> int | None:
    from homework_monitor.web import server
    if a.hash_password:
        return server.hash_password()
    updates = {k: v for k, v in (("host", a.host), ("port", a.port)) if v is not None}
    server.serve(settings.model_copy(update={"web": settings.web.model_copy(update=updates)}))
    return None


def cmd_topics(a, settings: Settings) -> None:
    from homework_monitor.deploy.broker import create_topics
    from homework_monitor.deploy.local_stack import all_topics, topic_configs
    create_topics(settings.kafka_bootstrap, all_topics(settings), configs=topic_configs(settings),
                  client_kwargs=settings.kafka_client_kwargs())
    print(json.dumps({"partitions": all_topics(settings), "configs": topic_configs(settings)}))


def cmd_sink(a, settings: Settings) -> int:
    import logging
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    from homework_monitor.store.sink import run_sink
    return run_sink(settings)


def cmd_store(a, settings: Settings) -> None:
    from dataclasses import asdict

    from homework_monitor.store.db import Store, current_revision, safe_url, store_url
    store = Store.open(settings)  # migrates to the newest revision
    try:
        if a.action == "migrate":
            print(json.dumps({"store": safe_url(store_url(settings)), "revision": current_revision(store.engine)}))
        else:
            from homework_monitor.store.retention import purge
            with store.session() as db:
                result = purge(db, settings.store.retention_days)
            print(json.dumps(asdict(result), default=str))
    finally:
        store.close()


def cmd_replay(a, settings: Settings) -> None:
    from homework_monitor.producers.replay import demo_sessions_dir, make_producer, read_sessions, replay, schedule
    sessions = read_sessions(a.input or [demo_sessions_dir()])
    if a.limit:
        sessions = sessions[: a.limit]
    msgs = schedule(sessions, a.speed, a.stagger, a.copies)
    counts = replay(msgs, make_producer(settings), settings.topics.utterances, progress=True)
    print(json.dumps(counts), file=sys.stderr)


class LivePrinter:
    """Prints homework events, nudges and session summaries as they arrive (the demo's terminal view)."""

    def __init__(self, settings: Settings, expect_summaries: int):
        from kafka import KafkaConsumer
        t = settings.topics
        self.consumer = KafkaConsumer(t.homework_events, t.session_summaries, t.nudges, t.dead_letter,
                                      auto_offset_reset="earliest", group_id=None,
                                      consumer_timeout_ms=500,
                                      fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
                                      **settings.kafka_client_kwargs())
        self.t, self.expect = t, expect_summaries
        self.summaries: list[dict] = []
        self.events: list[dict] = []
        self.nudges: list[dict] = []
        self.dead = 0
        self.done = threading.Event()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set() and not self.done.is_set():
            for msg in self.consumer:
                if self.stop.is_set():
                    break
                d = json.loads(msg.value)
                if msg.topic == self.t.homework_events:
                    self.events.append(d)
                    print(f"\033[1;32m● HOMEWORK\033[0m {d['session_id']:<26} turn {d['turn']:>3} "
                          f"{d['category']:<12} p={d['confidence']:.2f}  “{d['quote'][:110]}”", flush=True)
                elif msg.topic == self.t.session_summaries:
                    self.summaries.append(d)
                    cats = ", ".join(d["categories"]) or "none"
                    reviewed = d.get("previous_homework_reviewed")
                    follow_up = "" if reviewed is None else \
                        f"; last session's homework {'reviewed' if reviewed else 'NOT reviewed'}"
                    print(f"\033[1;34m■ SUMMARY\033[0m  {d['session_id']:<26} homework={d['homework_assigned']!s:<5} "
                          f"categories: {cats}; {d['n_utterances']} utterances, "
                          f"{d['n_microdialogues']} microdialogues{follow_up}", flush=True)
                elif msg.topic == self.t.nudges:
                    self.nudges.append(d)
                    print(f"\033[1;33m▲ NUDGE\033[0m    {d['session_id']:<26} {d['rule']:<17} "
                          f"{_clock(d['session_time_s'])} {d['message']}{_previous(d)}", flush=True)
                else:
                    self.dead += 1
                    print(f"\033[1;31m✖ DEAD-LETTER\033[0m reason={d['reason']}", flush=True)
                if len(self.summaries) >= self.expect:
                    self.done.set()
                    break
        self.consumer.close()


def wait_for_store(settings: Settings, summaries: int, timeout_s: float):
    """The store's counts once the sink has written ``summaries`` summaries (or at the timeout)."""
    import time

    from homework_monitor.store.db import Store
    from homework_monitor.store.queries import stored_counts
    store = Store.open(settings, migrate=False)  # the sink migrated it
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            with store.session() as db:
                counts = stored_counts(db)
            if counts.summaries >= summaries or time.monotonic() > deadline:
                return counts
            time.sleep(0.2)
    finally:
        store.close()


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "  --:--"
    m, sec = divmod(int(seconds), 60)
    return f"{m:>3d}:{sec:02d}"


def _previous(nudge: dict) -> str:
    """The previous session's homework categories (the quotes stay in the session views)."""
    cats = sorted({a["category"] for a in nudge.get("previous_assignments") or []})
    return f" (last time: {', '.join(cats)})" if cats else ""


def cmd_demo(a, settings: Settings) -> None:
    import logging

    from homework_monitor.deploy.local_stack import (
        Ports,
        start_broker,
        start_sink,
        start_triton,
        start_web,
        start_workers,
    )
    from homework_monitor.deploy.services import ServiceStack
    from homework_monitor.producers.replay import demo_sessions_dir, make_producer, read_sessions, replay, schedule
    from homework_monitor.store.db import safe_url, store_url
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("homework_monitor.deploy").setLevel(logging.INFO)
    logging.getLogger("kafka").setLevel(logging.CRITICAL)  # its reconnect chatter at shutdown
    run_dir = settings.run_dir / "demo"
    log_dir = run_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    settings = settings.model_copy(update={"run_dir": run_dir})
    ports = Ports(a.kafka_port, a.triton_port, a.triton_port + 1, a.triton_port + 2, a.metrics_port)
    sessions = read_sessions(a.input or [demo_sessions_dir()])
    print(f"homework-monitor demo: {len(sessions)} sessions, speed ×{a.speed}; logs in {log_dir}")
    printer = None
    with ServiceStack() as stack:
        try:
            settings = start_broker(stack, settings, ports, log_dir)
            print(f"  broker (tansu)   127.0.0.1:{ports.kafka}")
            settings = start_triton(stack, settings, ports, log_dir)
            print(f"  tritonserver     grpc {settings.triton_url}, metrics http://127.0.0.1:{ports.triton_metrics}/metrics")
            metrics_ports = [ports.worker_metrics + i for i in range(settings.local_workers)]
            for name, port in start_workers(stack, settings, log_dir, metrics_ports).items():
                print(f"  faust {name:<10} metrics http://127.0.0.1:{port}/metrics")
            start_sink(stack, settings, log_dir)
            print(f"  store sink       {safe_url(store_url(settings))}")
            web_url = start_web(stack, settings, log_dir, a.web_port or settings.web.port)
            print(f"  web app          {web_url}/  {demo_login_hint(settings)}")
            printer = LivePrinter(settings, len(sessions))
            th = threading.Thread(target=printer.run, daemon=True)
            th.start()
            msgs = schedule(sessions, a.speed, a.stagger)
            replay(msgs, make_producer(settings), settings.topics.utterances, progress=False)
            printer.done.wait(timeout=settings.silence_flush_s + 60)
            printer.stop.set()
            th.join(5)
            hw = sum(1 for s in printer.summaries if s["homework_assigned"])
            rules = Counter(n["rule"] for n in printer.nudges)
            print(f"\n{len(printer.events)} homework events, {len(printer.summaries)}/{len(sessions)} summaries "
                  f"({hw} with homework), {len(printer.nudges)} nudges "
                  f"({', '.join(f'{k}: {v}' for k, v in sorted(rules.items())) or 'none'}), "
                  f"{printer.dead} dead letters.")
            stored = wait_for_store(settings, len(printer.summaries), timeout_s=30)
            print(f"store: {stored.summaries} sessions with summaries, {stored.events} homework events, "
                  f"{stored.nudges} nudges in {safe_url(store_url(settings))}.")
            if sys.stdin.isatty():  # someone is watching: leave the web app up to look around
                print(f"The web app stays up at {web_url}/ ({demo_login_hint(settings)}); Ctrl-C stops everything.")
                threading.Event().wait()
            print("Stopping services.")
        except KeyboardInterrupt:
            print("\ninterrupted: stopping services")
        finally:
            if printer is not None:  # stop printing before the broker goes away
                printer.stop.set()
                printer.done.set()


def demo_login_hint(settings: Settings) -> str:
    if settings.web.users_file is not None:
        return f"users from {settings.web.users_file}"
    from homework_monitor.web.users import DEMO_PASSWORD
    return (f"demo login: therapist1 / {DEMO_PASSWORD} (therapist; therapist11 gets the nudges), "
            f"supervisor / {DEMO_PASSWORD} (program cbt-anxiety)")


def cmd_passthrough(module: str):
    def run(a, settings):
        import importlib
        importlib.import_module(module).main(a.rest)
    return run


def cmd_export_schemas(a, settings: Settings) -> None:
    from homework_monitor.stream.schemas import export_json_schemas
    for p in export_json_schemas(a.out):
        print(p)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="homework-monitor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="run the whole local stack on the demo sessions")
    d.add_argument("--input", type=Path, nargs="*", help="session JSONL files/dirs (default: demo sessions)")
    d.add_argument("--speed", type=float, default=8.0, help="replay speed factor")
    d.add_argument("--stagger", type=float, default=1.5, help="seconds between session starts")
    d.add_argument("--kafka-port", type=int, default=9092)
    d.add_argument("--triton-port", type=int, default=8000, help="http; grpc and metrics are +1, +2")
    d.add_argument("--metrics-port", type=int, default=9100,
                   help="worker-1's metrics port; worker-N (HWM_LOCAL_WORKERS) gets this + N - 1")
    d.add_argument("--web-port", type=int, default=None, help="the web app's port (default HWM_WEB_PORT, 8080)")
    d.set_defaults(func=cmd_demo)

    sub.add_parser("worker", help="run the Faust worker").set_defaults(func=cmd_worker)
    w = sub.add_parser("web", help="run the clinicians' web app (uvicorn)")
    w.add_argument("--host", help="bind address (default HWM_WEB_HOST, 127.0.0.1)")
    w.add_argument("--port", type=int, help="port (default HWM_WEB_PORT, 8080)")
    w.add_argument("--hash-password", action="store_true",
                   help="read a password (no echo) and print its Argon2id hash for a users file")
    w.set_defaults(func=cmd_web)
    sub.add_parser("sink", help="store events, summaries and nudges in the database").set_defaults(func=cmd_sink)
    st = sub.add_parser("store", help="store maintenance (docs/STORE.md)")
    st.add_argument("action", choices=["migrate", "purge"],
                    help="migrate: schema to the newest revision; purge: delete what is past retention")
    st.set_defaults(func=cmd_store)
    sub.add_parser("topics", help="create topics").set_defaults(func=cmd_topics)

    r = sub.add_parser("replay", help="replay sessions into Kafka")
    r.add_argument("--input", type=Path, nargs="*")
    r.add_argument("--speed", type=float, default=1.0)
    r.add_argument("--stagger", type=float, default=2.0)
    r.add_argument("--copies", type=int, default=1, help="replay each session N times (load)")
    r.add_argument("--limit", type=int)
    r.set_defaults(func=cmd_replay)

    offline_epilog = (
        "Input lines are validated as the worker validates messages (same limits, HWM_MAX_TEXT_CHARS for "
        "text). Good lines are processed and written; refused lines go to OUTPUT's rejects file "
        "(labels.jsonl -> labels.rejects.jsonl, written on every run) as line number, reason and a detail "
        "that never holds their text. Exit status: 0 when every line was processed, 2 when any was refused, "
        "1 on any other error.")
    session_epilog = (" A session with any invalid utterance is refused as a whole (one rejects row with "
                      "its line number and the index of the first invalid utterance): a summary of part "
                      "of a session would read as the summary of all of it.")
    for name, func, helptext in (("classify", cmd_classify, "classify microdialogues"),
                                 ("summarize", cmd_summarize, "summarize whole sessions"),
                                 ("review", cmd_review, "export low-confidence predictions")):
        c = sub.add_parser(name, help=helptext, description=helptext,
                           epilog=offline_epilog + (session_epilog if name != "classify" else ""))
        c.add_argument("--input", type=Path, required=True)
        c.add_argument("--output", type=Path, required=True)
        c.add_argument("--triton-url", help="host:port of Triton gRPC (default: in process)")
        c.add_argument("--artifact", type=Path, help="model artifact dir (default: the served one)")
        if name == "summarize":
            c.add_argument("--threshold", type=float)
            c.add_argument("--truth", type=Path, help="sessions_dev.jsonl: print accuracy/precision/recall")
        if name == "review":
            c.add_argument("--max-confidence", type=float, default=0.6)
            c.add_argument("--limit", type=int, default=500)
        c.set_defaults(func=func)

    for name, module in (("evaluate", "homework_monitor.training.table1"), ("pretrain", "homework_monitor.training.pretrain"),
                         ("export-model", "homework_monitor.training.export")):
        c = sub.add_parser(name, help=f"python -m {module} (arguments pass through)", add_help=False)
        c.add_argument("rest", nargs=argparse.REMAINDER)
        c.set_defaults(func=cmd_passthrough(module))

    s = sub.add_parser("export-schemas", help="write JSON Schema files")
    s.add_argument("--out", type=Path, default=Path("schemas"))
    s.set_defaults(func=cmd_export_schemas)
    return p


def describe_error(exc: BaseException) -> str:
    """One line about an unexpected error: its type and where it was raised, never its message
    (messages can quote input records); for OS errors the reason and the path."""
    where = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    at = f" at {Path(where.filename).name}:{where.lineno} in {where.name}" if where else ""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{type(exc).__name__}: {exc.strerror}: {exc.filename}" if exc.filename else \
            f"{type(exc).__name__}: {exc.strerror}{at}"
    return f"{type(exc).__name__}{at}"


def main(argv: Sequence[str] | None = None) -> int:
    """Exit status: 0 done; 1 an error (one line on stderr; HWM_DEBUG=1 raises it with its traceback);
    2 a usage error, or offline input lines refused (see each command's --help)."""
    logsafe.install()  # before anything can log: exceptions never carry transcript text into logs
    args = build_parser().parse_args(argv)
    try:
        return args.func(args, Settings()) or 0
    except KeyboardInterrupt:
        print(f"homework-monitor {args.cmd}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("HWM_DEBUG") == "1":
            raise
        print(f"homework-monitor {args.cmd}: error: {describe_error(exc)} "
              "(HWM_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
