"""Transcript text never reaches a log line: planted markers through every path exceptions take.

Each test plants ``MARKER`` (standing in for transcript text) in an exception, a log argument or a
warning, sends it through the real library code that leaked it before (mode's crash line, asyncio's
exception handler, pydantic's ValidationError, ``traceback.format_exc()``), formats the records with a
formatter that prints tracebacks, and checks the marker is gone while the exception type and its code
location stay.
"""
from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import threading
import traceback
import warnings

import pytest
from pydantic import BaseModel, ValidationError

from homework_monitor import logsafe

MARKER = "PHI-MARKER-7f3a"
TEXT = f"so {MARKER} this week I want you to write down every worry"


@pytest.fixture
def log_output():
    """Install the guard, capture every record of every logger as formatted text, undo both after."""
    was_installed = logsafe.installed()
    logsafe.install()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))  # prints exc_info too
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)
    if not was_installed:
        logsafe.uninstall()


class Utt(BaseModel):
    text: str
    seq: int


def _validation_error() -> ValidationError:
    try:
        Utt.model_validate({"text": TEXT, "seq": TEXT})
    except ValidationError as exc:
        return exc
    raise AssertionError("no error")


def _unicode_error() -> UnicodeEncodeError:
    try:
        (TEXT + "\ud800").encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc
    raise AssertionError("no error")


def test_markers_would_leak_without_the_guard():
    """The premise: these exceptions do carry the text (so the tests below can fail)."""
    assert MARKER in str(_validation_error())
    assert MARKER in repr(_unicode_error())


def test_traceback_becomes_type_and_location(log_output):
    log = logging.getLogger("homework_monitor.worker")
    try:
        raise ValueError(TEXT)
    except ValueError:
        log.exception("batch failed")
    out = log_output.getvalue()
    assert MARKER not in out
    assert "batch failed [ValueError at tests/test_logsafe.py:" in out
    assert "in test_traceback_becomes_type_and_location" in out
    assert "Traceback" not in out


def test_chained_causes_keep_their_types_not_their_text(log_output):
    try:
        try:
            (TEXT + "\ud800").encode("utf-8")
        except UnicodeEncodeError as inner:
            raise RuntimeError(f"classify failed for {TEXT}") from inner
    except RuntimeError:
        logging.getLogger("x").exception("agent error")
    out = log_output.getvalue()
    assert MARKER not in out
    assert "RuntimeError at" in out and "<- UnicodeEncodeError at" in out


async def test_mode_service_crash_line_does_not_quote_the_record(log_output):
    """Faust's agent crash: mode's ``Service.crash`` logs ``Crashed reason=%r`` with the traceback."""
    from mode import Service
    service = Service()
    try:
        (TEXT + "\ud800").encode("utf-8")
    except UnicodeEncodeError as exc:
        await service.crash(exc)
    out = log_output.getvalue()
    assert "Crashed reason=" in out
    assert MARKER not in out
    assert "UnicodeEncodeError at tests/test_logsafe.py" in out


@pytest.mark.parametrize("how", ["exception", "arg", "msg", "format_exc"])
def test_validation_error_input_values_never_print(log_output, how):
    log = logging.getLogger("homework_monitor.cli")
    try:
        Utt.model_validate_json(json.dumps({"text": TEXT, "seq": TEXT}))
    except ValidationError as exc:
        if how == "exception":
            log.exception("bad record")
        elif how == "arg":
            log.error("bad record: %s (%r)", exc, exc)
        elif how == "msg":
            log.error(exc)
        else:  # faust.utils.agent_stopper: log.error("%s", traceback.format_exc())
            log.error("%s", traceback.format_exc())
    out = log_output.getvalue()
    assert MARKER not in out
    assert "ValidationError" in out


def test_asyncio_task_exception_never_retrieved(log_output):
    """asyncio's default handler puts the task repr (``exception=ValueError('...')``) in the message."""
    async def fails():
        raise ValueError(TEXT)

    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(fails())
        loop.run_until_complete(asyncio.wait([task]))
        loop.call_exception_handler({"message": "Task exception was never retrieved",
                                     "exception": task.exception(), "future": task})
    finally:
        loop.close()
    out = log_output.getvalue()
    assert "Task exception was never retrieved" in out
    assert MARKER not in out


def test_raw_values_and_records_in_arguments_are_reduced(log_output):
    from aiokafka.structs import ConsumerRecord
    payload = json.dumps({"type": "utterance", "text": TEXT}).encode()
    record = ConsumerRecord("utterances", 0, 7, 0, 0, b"s1", payload, None, 2, len(payload), [])
    log = logging.getLogger("aiokafka.consumer")
    log.warning("raw %s, record %r, batch %r, model %r", payload, record, [record],
                Utt(text=TEXT, seq=1))
    out = log_output.getvalue()
    assert MARKER not in out
    assert f"<{len(payload)} bytes>" in out and "<ConsumerRecord>" in out and "<Utt>" in out


def test_ordinary_log_lines_pass_unchanged(log_output):
    logging.getLogger("homework_monitor.worker").info("partitions assigned: %s %s", "utterances", [0, 1])
    logging.getLogger("homework_monitor.worker").info("100%% of %d sessions", 3)
    assert log_output.getvalue().splitlines() == [
        "INFO homework_monitor.worker partitions assigned: utterances [0, 1]",
        "INFO homework_monitor.worker 100% of 3 sessions"]


def test_warnings_keep_location_and_category_only(log_output):
    # What logging.captureWarnings routes a warning into (pytest swaps warnings.showwarning per test;
    # the subprocess test below checks install() routes real warnings).
    text = warnings.formatwarning(f"serialized value may not be as expected [input_value={TEXT!r}]",
                                  UserWarning, __file__, 42)
    logging.getLogger("py.warnings").warning("%s", text)
    out = log_output.getvalue()
    assert MARKER not in out
    assert "test_logsafe.py" in out and "UserWarning" in out


def test_uncaught_exception_in_a_thread(log_output):
    def run():
        raise KeyError(TEXT)

    t = threading.Thread(target=run, name="fetcher")
    t.start()
    t.join()
    out = log_output.getvalue()
    assert MARKER not in out
    assert "uncaught exception in fetcher: KeyError at tests/test_logsafe.py" in out


def test_uncaught_exception_in_a_process_exits_nonzero_without_text():
    code = ("from homework_monitor import logsafe; logsafe.install()\n"
            f"import warnings; warnings.warn({TEXT!r})\n"
            f"def parse(): raise ValueError({TEXT!r})\n"
            "parse()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert MARKER not in proc.stderr + proc.stdout
    assert "uncaught exception in main thread: ValueError at" in proc.stderr and "in parse" in proc.stderr
    assert "<string>:2: UserWarning" in proc.stderr


def test_cli_installs_the_guard_for_every_command(tmp_path):
    """``homework-monitor classify`` on a record whose validation error quotes its input."""
    bad = tmp_path / "items.jsonl"
    bad.write_text(json.dumps({"id": "i1", "therapist": {"q": MARKER}, "client": MARKER, "context": []}) + "\n")
    proc = subprocess.run([sys.executable, "-m", "homework_monitor.cli", "classify", "--input", str(bad),
                           "--output", str(tmp_path / "out.jsonl")], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert MARKER not in proc.stderr + proc.stdout


def test_summary_of_an_unraised_exception_is_its_type():
    assert logsafe.exception_summary(ValueError(TEXT)) == "ValueError"
    assert logsafe.exception_summary(_validation_error()).startswith("pydantic_core._pydantic_core.ValidationError at ")


def test_install_is_idempotent_and_reversible():
    was = logsafe.installed()
    before = logging.getLogRecordFactory()
    logsafe.install()
    factory = logging.getLogRecordFactory()
    logsafe.install()
    assert logging.getLogRecordFactory() is factory
    if not was:
        assert factory is not before
        logsafe.uninstall()
        assert logging.getLogRecordFactory() is before
