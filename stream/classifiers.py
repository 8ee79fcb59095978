"""Classifier adapters: Triton over gRPC (the live path) or the artifact in process (offline, tests).

Both implement ``homework_monitor.contract.Classifier``: examples in, [n, 5] probabilities in
``CLASSES`` order out. At start-up the Triton client checks the served model against the contract
(tensor names and types, class order, batch size) and refuses to run on a mismatch. The Triton client
cuts work into slices of the server's batch size and keeps at most ``max_inflight`` calls open.

A failed call is sorted by ``failure_kind``. Transient server states -- unavailable or refused
connections, timeouts, and whatever a server says while it stops or unloads the model (a rolling
restart: cancelled, internal, not found) -- wait with capped exponential backoff for as long as it
takes: the stream waits, nothing is dropped, and the worker's stall detector watches the wait. A
request the server rejects (``INVALID_ARGUMENT``...) will not succeed later: it fails after
``triton_retries`` retries (0: at once), and the worker stops without committing the batch.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from homework_monitor.contract import (
    CLASSES,
    CLASSES_PARAMETER,
    INPUT_CLIENT,
    INPUT_CONTEXT,
    INPUT_DATATYPE,
    INPUT_THERAPIST,
    INPUTS,
    OUTPUT_DATATYPE,
    OUTPUT_PROBS,
    ContractMismatch,
    Example,
    check_classes,
)

from . import metrics
from .config import Settings

log = logging.getLogger("homework_monitor.classifier")


class ClassifierUnavailable(RuntimeError):
    """The server is missing, misconfigured, or rejects requests: retrying cannot help."""


# Kinds of failed calls (the ``kind`` label of hwm_classifier_errors_total).
TRANSIENT_KINDS = ("timeout", "unavailable", "server_error")
# gRPC codes of a request the server refuses to run; every other code is a server state that passes.
REJECTED_CODES = frozenset({"INVALID_ARGUMENT", "OUT_OF_RANGE", "UNIMPLEMENTED", "PERMISSION_DENIED",
                            "UNAUTHENTICATED"})


def status_code(exc: BaseException) -> str | None:
    """The gRPC code name of a Triton client error (``StatusCode.UNAVAILABLE`` -> ``UNAVAILABLE``)."""
    status = getattr(exc, "status", None)
    value = status() if callable(status) else None
    return str(value).rsplit(".", 1)[-1] if value else None


def failure_kind(exc: BaseException) -> str:
    """timeout | unavailable | server_error | rejected | other; the first three are transient."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    code = status_code(exc)
    if code is None:
        return "other"  # not an answer from the server: a client-side error
    if code == "UNAVAILABLE":
        return "unavailable"  # connection refused or reset, server not accepting, "Server is stopping"
    if code in REJECTED_CODES:
        return "rejected"
    return "server_error"  # CANCELLED, INTERNAL, NOT_FOUND (model unloading), DEADLINE_EXCEEDED...


def gives_up(kind: str, failures: int, retries: int) -> bool:
    """After ``failures`` non-transient failures of one call: stop? Transient kinds never stop."""
    return kind not in TRANSIENT_KINDS and failures > retries


def triton_inputs(items: Sequence[Example]) -> dict[str, np.ndarray]:
    def col(values):
        return np.array([v.encode("utf-8") for v in values], dtype=np.object_).reshape(-1, 1)
    return {INPUT_THERAPIST: col([e.therapist for e in items]),
            INPUT_CLIENT: col([e.client or "" for e in items]),
            INPUT_CONTEXT: col([json.dumps([{"speaker": s, "text": t} for s, t in e.context])
                                for e in items])}


def check_served_model(config: dict[str, Any], metadata: dict[str, Any]) -> None:
    """The served model must speak the contract: same tensors, types and class order."""
    inputs = {t["name"]: t["datatype"] for t in metadata.get("inputs", [])}
    outputs = {t["name"]: t["datatype"] for t in metadata.get("outputs", [])}
    expected_inputs = {n: INPUT_DATATYPE for n in INPUTS}
    if inputs != expected_inputs or outputs.get(OUTPUT_PROBS) != OUTPUT_DATATYPE:
        raise ContractMismatch(f"served tensors {inputs} -> {outputs}; contract {expected_inputs} -> "
                               f"{{{OUTPUT_PROBS!r}: {OUTPUT_DATATYPE!r}}}")
    dims = next((o.get("dims") for o in config.get("output", []) if o.get("name") == OUTPUT_PROBS), None)
    if [int(d) for d in dims or []] != [len(CLASSES)]:
        raise ContractMismatch(f"{OUTPUT_PROBS} dims {dims} != [{len(CLASSES)}]")
    param = config.get("parameters", {}).get(CLASSES_PARAMETER, {}).get("string_value")
    if not param:
        raise ContractMismatch(f"served model has no '{CLASSES_PARAMETER}' parameter (class order unknown)")
    check_classes(param.split(","), "served model")


class TritonClassifier:
    def __init__(self, settings: Settings):
        self.s = settings
        self.model_version = f"{settings.triton_model}/1"
        self._client: Any = None  # tritonclient.grpc.aio.InferenceServerClient once started
        self._sem = asyncio.Semaphore(settings.triton_max_inflight)
        self._ready = asyncio.Event()  # the agent may get records before start() has finished
        self.batch = settings.triton_max_batch

    async def start(self) -> None:
        import tritonclient.grpc.aio as grpcclient
        self._client = grpcclient.InferenceServerClient(self.s.triton_url)
        deadline = time.monotonic() + 60
        while True:
            try:
                if await self._client.is_model_ready(self.s.triton_model):
                    break
            except Exception:  # noqa: BLE001 - server still starting
                pass
            if time.monotonic() > deadline:
                raise ClassifierUnavailable(f"model {self.s.triton_model} not ready at {self.s.triton_url}")
            await asyncio.sleep(0.5)
        cfg = (await self._client.get_model_config(self.s.triton_model, as_json=True))["config"]
        metadata = await self._client.get_model_metadata(self.s.triton_model, as_json=True)
        check_served_model(cfg, metadata)
        server_max = int(cfg.get("max_batch_size", 0))
        # Refuse to start rather than send batches the server would reject (as Morpheus does).
        if server_max < self.s.triton_max_batch:
            raise ClassifierUnavailable(f"Triton max_batch_size {server_max} < configured "
                                        f"HWM_TRITON_MAX_BATCH {self.s.triton_max_batch}")
        versions = metadata.get("versions")
        if versions:
            self.model_version = f"{self.s.triton_model}/{max(versions, key=int)}"
        self._ready.set()

    async def _infer_slice(self, items: Sequence[Example]) -> np.ndarray:
        import tritonclient.grpc.aio as grpcclient
        inputs = []
        for name, arr in triton_inputs(items).items():
            inp = grpcclient.InferInput(name, list(arr.shape), INPUT_DATATYPE)
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        outputs = [grpcclient.InferRequestedOutput(OUTPUT_PROBS)]
        delay, attempt, failures = self.s.triton_backoff_s, 0, 0
        while True:
            async with self._sem:
                metrics.CLASSIFIER_INFLIGHT.inc()
                t0 = time.perf_counter()
                try:
                    res = await asyncio.wait_for(
                        self._client.infer(self.s.triton_model, inputs, outputs=outputs),
                        timeout=self.s.triton_timeout_s)
                    metrics.CLASSIFIER_SECONDS.observe(time.perf_counter() - t0)
                    metrics.CLASSIFIER_BATCH.observe(len(items))
                    return res.as_numpy(OUTPUT_PROBS)
                except Exception as exc:  # noqa: BLE001 - sorted, counted, retried or raised below
                    kind, code = failure_kind(exc), status_code(exc) or "-"
                finally:
                    metrics.CLASSIFIER_INFLIGHT.dec()
            metrics.CLASSIFIER_ERRORS.labels(kind=kind).inc()
            attempt += 1
            if kind not in TRANSIENT_KINDS:
                failures += 1
                if gives_up(kind, failures, self.s.triton_retries):
                    log.error("classifier %s (%s, %d time(s)): giving up", kind, code, failures)
                    # Not chained: a server's message may quote the request, i.e. transcript text.
                    raise ClassifierUnavailable(f"classifier call failed: {kind} ({code}), {failures} time(s)")
            # The stream waits (backpressure) instead of dropping input: offsets are committed only
            # after the batch is processed. Only the kind and the gRPC code are logged, never a message.
            log.warning("classifier %s (%s, attempt %d); retrying in %.2fs", kind, code, attempt, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.s.triton_backoff_max_s)

    async def classify(self, items: Sequence[Example]) -> np.ndarray:
        if not items:
            return np.zeros((0, len(CLASSES)), dtype=np.float32)
        await self._ready.wait()
        slices = [items[i:i + self.batch] for i in range(0, len(items), self.batch)]
        calls = [asyncio.ensure_future(self._infer_slice(s)) for s in slices]
        try:
            parts = await asyncio.gather(*calls)
        except BaseException:
            for call in calls:  # one slice failed (or the batch was cancelled): stop the others
                call.cancel()
            raise
        return np.concatenate(parts, axis=0)

    async def is_ready(self) -> bool:
        """Whether the server says the model is ready (the worker's readiness check)."""
        if self._client is None:
            return False
        try:
            return bool(await asyncio.wait_for(self._client.is_model_ready(self.s.triton_model),
                                               timeout=min(5.0, self.s.triton_timeout_s)))
        except Exception:  # noqa: BLE001 - any failure means not ready
            return False

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


class InProcessClassifier:
    """The committed artifact run in this process (a worker thread keeps the event loop free)."""

    def __init__(self, artifact: Path):
        self.artifact = Path(artifact)
        self._model = None
        self.model_version = ""

    def load(self):
        if self._model is None:
            from homework_monitor.model import HomeworkClassifier
            self._model = HomeworkClassifier(self.artifact)
            self.model_version = self._model.version
        return self._model

    async def start(self) -> None:
        await asyncio.to_thread(self.load)

    async def is_ready(self) -> bool:
        return self._model is not None

    def classify_sync(self, items: Sequence[Example]) -> np.ndarray:
        return self.load().predict_proba(items)

    async def classify(self, items: Sequence[Example]) -> np.ndarray:
        t0 = time.perf_counter()
        out = await asyncio.to_thread(self.classify_sync, items)
        metrics.CLASSIFIER_SECONDS.observe(time.perf_counter() - t0)
        metrics.CLASSIFIER_BATCH.observe(len(items))
        return out

    async def close(self) -> None:
        return None
