"""Classifier clients: Triton over gRPC (the live path) or the artifact in process (offline, tests).

Both take microdialogues and return [n, 5] probabilities in ``CLASSES`` order. The Triton client
cuts work into slices of the server's batch size, keeps at most ``max_inflight`` calls open, and
retries timed-out or unavailable calls with capped exponential backoff for as long as it takes (the
stream waits; nothing is dropped). Requests the server rejects fail after ``triton_retries``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from . import metrics
from .config import Settings
from .windowing import Microdialogue

log = logging.getLogger("homework_monitor.classifier")


class Classifier(Protocol):
    model_version: str

    async def start(self) -> None: ...
    async def classify(self, items: Sequence[Microdialogue]) -> np.ndarray: ...
    async def close(self) -> None: ...


class ClassifierUnavailable(RuntimeError):
    """The server is missing, misconfigured, or rejects requests: retrying cannot help."""


def triton_inputs(items: Sequence[Microdialogue]) -> dict[str, np.ndarray]:
    def col(values):
        return np.array([v.encode("utf-8") for v in values], dtype=np.object_).reshape(-1, 1)
    return {"THERAPIST": col([m.therapist.text for m in items]),
            "CLIENT": col([m.client.text if m.client else "" for m in items]),
            "CONTEXT": col([json.dumps([t.model_dump() for t in m.context_turns()]) for m in items])}


class TritonClassifier:
    def __init__(self, settings: Settings):
        self.s = settings
        self.model_version = f"{settings.triton_model}/1"
        self._client = None
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
        cfg = await self._client.get_model_config(self.s.triton_model, as_json=True)
        server_max = int(cfg["config"].get("max_batch_size", 0))
        # Refuse to start rather than send batches the server would reject (as Morpheus does).
        if server_max < self.s.triton_max_batch:
            raise ClassifierUnavailable(f"Triton max_batch_size {server_max} < configured "
                                        f"HWM_TRITON_MAX_BATCH {self.s.triton_max_batch}")
        versions = (await self._client.get_model_metadata(self.s.triton_model, as_json=True)).get("versions")
        if versions:
            self.model_version = f"{self.s.triton_model}/{max(versions, key=int)}"
        self._ready.set()

    async def _infer_slice(self, items: Sequence[Microdialogue]) -> np.ndarray:
        import tritonclient.grpc.aio as grpcclient
        from tritonclient.utils import InferenceServerException
        inputs = []
        for name, arr in triton_inputs(items).items():
            inp = grpcclient.InferInput(name, list(arr.shape), "BYTES")
            inp.set_data_from_numpy(arr)
            inputs.append(inp)
        outputs = [grpcclient.InferRequestedOutput("PROBS")]
        delay, attempt = self.s.triton_backoff_s, 0
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
                    return res.as_numpy("PROBS")
                except asyncio.TimeoutError:
                    kind = "timeout"
                except InferenceServerException as exc:
                    kind = "unavailable" if "UNAVAILABLE" in str(exc.status()) else "other"
                except Exception:  # noqa: BLE001 - counted and retried below
                    kind = "other"
                finally:
                    metrics.CLASSIFIER_INFLIGHT.dec()
            metrics.CLASSIFIER_ERRORS.labels(kind=kind).inc()
            attempt += 1
            if self.s.triton_retries and attempt > self.s.triton_retries and kind == "other":
                # A request the server rejects will not succeed later: fail loudly.
                raise ClassifierUnavailable(f"classifier rejected the request {attempt} times")
            # Timeouts and unavailability stall the stream (backpressure) instead of dropping input:
            # offsets are only committed after the batch is processed.
            log.warning("classifier %s (attempt %d); retrying in %.2fs", kind, attempt, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.s.triton_backoff_max_s)

    async def classify(self, items: Sequence[Microdialogue]) -> np.ndarray:
        if not items:
            return np.zeros((0, 5), dtype=np.float32)
        await self._ready.wait()
        slices = [items[i:i + self.batch] for i in range(0, len(items), self.batch)]
        parts = await asyncio.gather(*(self._infer_slice(s) for s in slices))
        return np.concatenate(parts, axis=0)

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
            from training.model import HomeworkClassifier
            self._model = HomeworkClassifier(self.artifact)
            self.model_version = self._model.version
        return self._model

    async def start(self) -> None:
        await asyncio.to_thread(self.load)

    def classify_sync(self, items: Sequence[Microdialogue]) -> np.ndarray:
        from training.model import Example
        return self.load().predict_proba([Example.of_microdialogue(m) for m in items])

    async def classify(self, items: Sequence[Microdialogue]) -> np.ndarray:
        t0 = time.perf_counter()
        out = await asyncio.to_thread(self.classify_sync, items)
        metrics.CLASSIFIER_SECONDS.observe(time.perf_counter() - t0)
        metrics.CLASSIFIER_BATCH.observe(len(items))
        return out

    async def close(self) -> None:
        return None
