"""How the Triton client sorts failed calls: transient server states wait, rejections fail fast."""
from __future__ import annotations

import grpc
import pytest
from tritonclient.grpc import _utils as grpc_utils
from tritonclient.utils import InferenceServerException

from homework_monitor.stream.classifiers import TRANSIENT_KINDS, failure_kind, gives_up, status_code


class _RpcError(grpc.RpcError):
    """A gRPC error as the channel raises it (tritonclient converts these with raise_error_grpc)."""

    def __init__(self, code: grpc.StatusCode, details: str):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details

    def debug_error_string(self):
        return ""


def from_server(code: grpc.StatusCode, details: str = "anything") -> InferenceServerException:
    """The exception tritonclient's gRPC client raises for a server answer with ``code``."""
    with pytest.raises(InferenceServerException) as raised:
        grpc_utils.raise_error_grpc(_RpcError(code, details))
    return raised.value


@pytest.mark.parametrize("code, kind", [
    (grpc.StatusCode.UNAVAILABLE, "unavailable"),         # refused, reset, "Server is stopping"
    (grpc.StatusCode.CANCELLED, "server_error"),          # in-flight requests during shutdown
    (grpc.StatusCode.INTERNAL, "server_error"),           # backend stub gone while the model unloads
    (grpc.StatusCode.NOT_FOUND, "server_error"),          # model already unloaded
    (grpc.StatusCode.UNKNOWN, "server_error"),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "server_error"),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, "server_error"),
    (grpc.StatusCode.INVALID_ARGUMENT, "rejected"),
    (grpc.StatusCode.UNIMPLEMENTED, "rejected"),
])
def test_server_answers_are_sorted_by_grpc_code(code, kind):
    exc = from_server(code)
    assert status_code(exc) == code.name
    assert failure_kind(exc) == kind


def test_timeouts_are_transient_and_client_errors_are_not():
    assert failure_kind(TimeoutError()) == "timeout"
    assert failure_kind(InferenceServerException("no status")) == "other"
    assert failure_kind(UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates not allowed")) == "other"
    assert set(TRANSIENT_KINDS) == {"timeout", "unavailable", "server_error"}


def test_transient_failures_never_give_up():
    for kind in TRANSIENT_KINDS:
        assert not gives_up(kind, failures=10_000, retries=0)


@pytest.mark.parametrize("retries", [0, 1, 3])
def test_rejections_give_up_after_the_configured_retries(retries):
    """HWM_TRITON_RETRIES=0 fails at once (it used to mean "retry forever")."""
    assert [gives_up("rejected", n, retries) for n in range(1, retries + 2)] == [False] * retries + [True]
    assert gives_up("other", retries + 1, retries)
