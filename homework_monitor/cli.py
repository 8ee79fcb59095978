"""``homework-monitor``: the one console script.

  demo        broker + tritonserver + worker + replay of the demo sessions, live output (Ctrl-C stops)
  worker      the Faust worker (reads HWM_* settings)
  replay      replay sessions (corpus JSONL schema) into the utterances topic
  topics      create the topics with their partition counts
  classify    microdialogues JSONL -> labels + scores (artifact in process, or --triton-url)
  summarize   sessions JSONL -> one summary per session (same windowing/aggregation as the worker)
  review      export low-confidence predictions on unlabeled sessions for expert review
  evaluate    rebuild Table 1 (homework_monitor.training.table1)
  pretrain    TSDAE + NSP pretraining (homework_monitor.training.pretrain)
  export-model   build the served artifact from a Table 1 row (homework_monitor.training.export)
  export-schemas JSON Schema of every message into schemas/
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

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


def probs_for(classifier, examples):
    """Run an async classifier once from synchronous CLI code: [n, 5] probabilities."""
    async def run():
        await classifier.start()
        try:
            return await classifier.classify(examples)
        finally:
            await classifier.close()
    return asyncio.run(run())


# --- classify / summarize / review -------------------------------------------------------------
def cmd_classify(a, settings: Settings) -> None:
    from homework_monitor.contract import CLASSES, Example
    from homework_monitor.stream.schemas import ClassifyInput, ClassifyOutput
    rows = [ClassifyInput.model_validate(d) for d in _read_jsonl(a.input)]
    examples = [Example(therapist=r.therapist, client=r.client,
                        context=tuple((t.speaker, t.text) for t in r.context)) for r in rows]
    probs = probs_for(make_classifier(settings, a.triton_url, a.artifact), examples)
    out = (ClassifyOutput(id=r.id, label=CLASSES[int(p.argmax())],
                          scores={c: round(float(v), 6) for c, v in zip(CLASSES, p)}).model_dump_json()
           for r, p in zip(rows, probs))
    print(f"classified {_write_jsonl(a.output, out)} microdialogues -> {a.output}", file=sys.stderr)


def summarize_corpus_sessions(sessions: list[dict], classifier, threshold: float,
                              settings: Settings | None = None):
    from homework_monitor.stream.offline import summarize_all, windowed_sessions
    from homework_monitor.stream.processor import window_config
    windowed = list(windowed_sessions(sessions, window_config(settings or Settings())))
    probs = probs_for(classifier, [m.example() for _, mds in windowed for m in mds])
    return summarize_all(windowed, probs, threshold, classifier.model_version)


def cmd_summarize(a, settings: Settings) -> None:
    sessions = _read_jsonl(a.input)
    threshold = a.threshold if a.threshold is not None else settings.event_threshold
    summaries = summarize_corpus_sessions(sessions, make_classifier(settings, a.triton_url, a.artifact), threshold,
                                          settings)
    rows = [{"session_id": s.session_id, "homework_assigned": s.homework_assigned, "categories": s.categories,
             "assignments": [{"turn": x.turn, "category": x.category, "confidence": x.confidence,
                              "start_s": x.start_s, "quote": x.quote} for x in s.assignments]}
            for s in summaries]
    _write_jsonl(a.output, rows)
    print(f"summarized {len(rows)} sessions -> {a.output}", file=sys.stderr)
    if a.truth:
        from homework_monitor.stream.offline import session_metrics
        truth = {d["session_id"]: d["homework"] for d in _read_jsonl(a.truth)}
        m = session_metrics(truth, {r["session_id"]: r["homework_assigned"] for r in rows})
        print(json.dumps({"threshold": threshold, **m}, indent=2))


def cmd_review(a, settings: Settings) -> None:
    """Active learning: microdialogues whose top probability is lowest go to expert review."""
    from homework_monitor.stream.offline import windowed_sessions
    from homework_monitor.stream.processor import window_config
    from homework_monitor.stream.schemas import CLASSES
    sessions = _read_jsonl(a.input)
    windowed = list(windowed_sessions(sessions, window_config(settings)))
    mds = [m for _, ms in windowed for m in ms]
    probs = probs_for(make_classifier(settings, a.triton_url, a.artifact), [m.example() for m in mds])
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


# --- services ----------------------------------------------------------------------------------
def cmd_worker(a, settings: Settings) -> None:
    from homework_monitor.stream.app import run_worker
    sys.argv = [sys.argv[0]]  # faust's command line parser must not see ours
    run_worker(settings)


def cmd_topics(a, settings: Settings) -> None:
    from homework_monitor.deploy.broker import create_topics
    from homework_monitor.deploy.local_stack import all_topics, topic_configs
    create_topics(settings.kafka_bootstrap, all_topics(settings), configs=topic_configs(settings))
    print(json.dumps({"partitions": all_topics(settings), "configs": topic_configs(settings)}))


def cmd_replay(a, settings: Settings) -> None:
    from homework_monitor.producers.replay import demo_sessions_dir, make_producer, read_sessions, replay, schedule
    sessions = read_sessions(a.input or [demo_sessions_dir()])
    if a.limit:
        sessions = sessions[: a.limit]
    msgs = schedule(sessions, a.speed, a.stagger, a.copies)
    counts = replay(msgs, make_producer(settings), settings.topics.utterances, progress=True)
    print(json.dumps(counts), file=sys.stderr)


class LivePrinter:
    """Prints homework events and session summaries as they arrive (the demo's terminal view)."""

    def __init__(self, settings: Settings, expect_summaries: int):
        from kafka import KafkaConsumer
        t = settings.topics
        self.consumer = KafkaConsumer(t.homework_events, t.session_summaries, t.dead_letter,
                                      auto_offset_reset="earliest", group_id=None,
                                      consumer_timeout_ms=500,
                                      fetch_max_wait_ms=settings.consumer_fetch_max_wait_ms,
                                      **settings.kafka_client_kwargs())
        self.t, self.expect = t, expect_summaries
        self.summaries: list[dict] = []
        self.events: list[dict] = []
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
                    print(f"\033[1;34m■ SUMMARY\033[0m  {d['session_id']:<26} homework={d['homework_assigned']!s:<5} "
                          f"categories: {cats}; {d['n_utterances']} utterances, "
                          f"{d['n_microdialogues']} microdialogues", flush=True)
                else:
                    self.dead += 1
                    print(f"\033[1;31m✖ DEAD-LETTER\033[0m reason={d['reason']}", flush=True)
                if len(self.summaries) >= self.expect:
                    self.done.set()
                    break
        self.consumer.close()


def cmd_demo(a, settings: Settings) -> None:
    import logging

    from homework_monitor.deploy.local_stack import Ports, start_broker, start_triton, start_worker
    from homework_monitor.deploy.services import ServiceStack
    from homework_monitor.producers.replay import demo_sessions_dir, make_producer, read_sessions, replay, schedule
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
            start_worker(stack, settings, log_dir, "worker-1", ports.worker_metrics)
            print(f"  faust worker     metrics http://127.0.0.1:{ports.worker_metrics}/metrics")
            printer = LivePrinter(settings, len(sessions))
            th = threading.Thread(target=printer.run, daemon=True)
            th.start()
            msgs = schedule(sessions, a.speed, a.stagger)
            replay(msgs, make_producer(settings), settings.topics.utterances, progress=False)
            printer.done.wait(timeout=settings.silence_flush_s + 60)
            printer.stop.set()
            th.join(5)
            hw = sum(1 for s in printer.summaries if s["homework_assigned"])
            print(f"\n{len(printer.events)} homework events, {len(printer.summaries)}/{len(sessions)} summaries "
                  f"({hw} with homework), {printer.dead} dead letters. Stopping services.")
        except KeyboardInterrupt:
            print("\ninterrupted: stopping services")
        finally:
            if printer is not None:  # stop printing before the broker goes away
                printer.stop.set()
                printer.done.set()


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
    d.add_argument("--metrics-port", type=int, default=9100)
    d.set_defaults(func=cmd_demo)

    sub.add_parser("worker", help="run the Faust worker").set_defaults(func=cmd_worker)
    sub.add_parser("topics", help="create topics").set_defaults(func=cmd_topics)

    r = sub.add_parser("replay", help="replay sessions into Kafka")
    r.add_argument("--input", type=Path, nargs="*")
    r.add_argument("--speed", type=float, default=1.0)
    r.add_argument("--stagger", type=float, default=2.0)
    r.add_argument("--copies", type=int, default=1, help="replay each session N times (load)")
    r.add_argument("--limit", type=int)
    r.set_defaults(func=cmd_replay)

    for name, func, helptext in (("classify", cmd_classify, "classify microdialogues"),
                                 ("summarize", cmd_summarize, "summarize whole sessions"),
                                 ("review", cmd_review, "export low-confidence predictions")):
        c = sub.add_parser(name, help=helptext)
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


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    args.func(args, Settings())


if __name__ == "__main__":
    main()
