"""Shared factory fixtures (Quix-style) and deterministic test doubles (Bytewax-style).

Nothing here touches the network: settings point Kafka at a closed port, the classifier is an
in-memory keyword scorer, and time comes from an explicit, advance-able ``FakeClock``. The
utterances are short lines written for these tests (no corpus text).
"""
from __future__ import annotations

import asyncio
import itertools
import json
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from faust.topics import Topic

from homework_monitor.contract import Example
from homework_monitor.stream.config import Settings
from homework_monitor.stream.processor import InboundRecord
from homework_monitor.stream.schemas import CLASSES, SessionEnd, SessionStart, SilenceCheck, Utterance
from homework_monitor.stream.windowing import Microdialogue, SessionState, Step, WindowConfig, apply_message


# --------------------------------------------------------------------------------------- clock
class FakeClock:
    """An explicit clock: callable like ``time.time`` and only moves when told to."""

    def __init__(self, start: float = 1_000.0):
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# --------------------------------------------------------------------------------- classifier
class KeywordClassifier:
    """Deterministic stand-in for the Classifier protocol, scoring the therapist text by keyword.

    Every batch it is asked to classify is recorded in ``calls`` (one list per call).
    """

    RULES: tuple[tuple[str, str], ...] = (
        ("breath", "practice"), ("write", "journal"), ("call", "take_action"), ("read", "learn"))
    TOP = 0.9

    def __init__(self, model_version: str = "fake-keywords/1"):
        self.model_version = model_version
        self.calls: list[list[Example]] = []
        self.started = False
        self.closed = False

    @classmethod
    def category_of(cls, therapist_text: str) -> str:
        text = therapist_text.lower()
        return next((cat for word, cat in cls.RULES if word in text), "none")

    async def start(self) -> None:
        self.started = True

    async def classify(self, items: Sequence[Example]) -> np.ndarray:
        self.calls.append(list(items))
        rest = (1.0 - self.TOP) / (len(CLASSES) - 1)
        probs = np.full((len(items), len(CLASSES)), rest, dtype=np.float32)
        for row, example in enumerate(items):
            probs[row, CLASSES.index(self.category_of(example.therapist))] = self.TOP
        return probs

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
def fake_classifier() -> KeywordClassifier:
    return KeywordClassifier()


# ---------------------------------------------------------------------------------- settings
@pytest.fixture
def settings_factory(monkeypatch, tmp_path) -> Callable[..., Settings]:
    """``settings_factory(**overrides)`` -> Settings isolated from the caller's environment."""
    import os
    for name in list(os.environ):
        if name.startswith("HWM_"):
            monkeypatch.delenv(name)

    def make(**overrides) -> Settings:
        values = {"kafka_bootstrap": "127.0.0.1:1", "run_dir": tmp_path / "var"}
        values.update(overrides)
        return Settings(_env_file=None, **values)
    return make


@pytest.fixture
def settings(settings_factory) -> Settings:
    return settings_factory()


# -------------------------------------------------------------------------------- utterances
class SessionScript:
    """Builds one session's messages with auto-incrementing ``seq`` (shared per session id)."""

    def __init__(self, session_id: str, counter: itertools.count[int], **meta):
        self.session_id = session_id
        self._counter = counter
        self.meta = meta
        self.n = 0

    def __call__(self, speaker: str, text: str, **fields) -> Utterance:
        values = {**self.meta, **fields}
        if "seq" not in values:
            values["seq"] = next(self._counter)
        self.n = max(self.n, values["seq"] + 1)
        return Utterance(session_id=self.session_id, speaker=speaker, text=text, **values)

    def therapist(self, text: str, **fields) -> Utterance:
        return self("therapist", text, **fields)

    def client(self, text: str, **fields) -> Utterance:
        return self("client", text, **fields)

    def start(self, **fields) -> SessionStart:
        return SessionStart(session_id=self.session_id, **{**self.meta, **fields})

    def end(self, n_utterances: int | None = None, **fields) -> SessionEnd:
        return SessionEnd(session_id=self.session_id,
                          n_utterances=self.n if n_utterances is None else n_utterances, **fields)

    def silence(self, at: float) -> SilenceCheck:
        return SilenceCheck(session_id=self.session_id, at=at)


@pytest.fixture
def utterance_factory() -> Callable[..., SessionScript]:
    """``utterance_factory(session_id="s1", **meta)`` -> a callable building that session's messages."""
    counters: dict[str, itertools.count] = defaultdict(itertools.count)

    def make(session_id: str = "s1", **meta) -> SessionScript:
        return SessionScript(session_id, counters[session_id], **meta)
    return make


# ------------------------------------------------------------------------------------ records
def to_record(message, offset: int | None = None, partition: int = 0) -> InboundRecord:
    """A wire record as the worker sees it: JSON bytes keyed by session id."""
    return InboundRecord(value=message.model_dump_json().encode(), key=message.session_id,
                         partition=partition, offset=offset)


@pytest.fixture
def record_factory() -> Callable[..., list[InboundRecord]]:
    """``record_factory(*messages_or_raw)`` -> InboundRecords with consecutive offsets."""
    offsets = itertools.count()

    def make(*items) -> list[InboundRecord]:
        out = []
        for item in items:
            if isinstance(item, (bytes, str)):
                out.append(InboundRecord(value=item, key=None, partition=0, offset=next(offsets)))
            else:
                out.append(to_record(item, next(offsets)))
        return out
    return make


# --------------------------------------------------------------------------------- windowing
def run_messages(messages, cfg: WindowConfig, clock: Callable[[], float] | None = None,
                 state: SessionState | None = None) -> tuple[SessionState | None, list[Microdialogue], list[Step]]:
    """Fold messages of one session through ``apply_message`` (the worker's state machine)."""
    mds: list[Microdialogue] = []
    steps: list[Step] = []
    ticks = itertools.count()
    for msg in messages:
        now = clock() if clock is not None else float(next(ticks))
        step = apply_message(state, msg, now, cfg)
        state = step.state
        steps.append(step)
        mds.extend(step.microdialogues)
    return state, mds, steps


# --- Faust topics, recorded -----------------------------------------------------------------------
# The agent tests run the real app under test_context(); its sends (events, summaries, dead letters) and
# its table's changelog writes (Topic.send_soon) are recorded here instead of reaching a broker.
class Sent:
    def __init__(self):
        self.records: list[tuple[str, bytes | str | None, object]] = []
        self.changelog: list[tuple[str, object, object]] = []

    def on(self, topic: str) -> list[dict]:
        return [json.loads(v) for t, _, v in self.records if t == topic]


@pytest.fixture
def sent(monkeypatch) -> Sent:
    rec = Sent()

    async def send(self, *, key=None, value=None, partition=None, **kwargs):
        rec.records.append((self.get_topic_name(), key, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def send_soon(self, *, key=None, value=None, partition=None, **kwargs):
        rec.changelog.append((self.get_topic_name(), key, value))
        # the table reads the final partition from the returned future's message; the agent waits for
        # its changelog writes, so the future is resolved as the broker's acknowledgement would
        fut = self.as_future_message(key=key, value=value, partition=partition or 0)
        fut.set_result(None)
        return fut

    monkeypatch.setattr(Topic, "send", send)
    monkeypatch.setattr(Topic, "send_soon", send_soon)
    return rec
