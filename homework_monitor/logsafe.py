"""Keep transcript text (protected health information) out of every log line.

Our own code never hands text to a logger. The leaks come from exceptions: a pydantic
``ValidationError`` quotes its input, ``UnicodeEncodeError`` carries the whole string it failed on,
Faust's agent crash line logs ``Crashed reason=%r`` with the exception, ``traceback.format_exc()``
ends with ``Type: message``, and asyncio's "Task exception was never retrieved" embeds the task's
repr. :func:`install` puts one guard in front of all of them:

* a log-record factory (so it holds whatever handlers and formatters Faust/mode install later, and
  for every logger): a record's traceback is replaced by the exception's type and location
  (``ValueError at stream/validation.py:42 in parse``; chained causes likewise), exceptions passed
  as arguments are reduced the same way, bytes arguments to their length, and objects that carry a
  message value (Kafka/Faust records, pydantic models) to their type name. Then the message is
  formatted once, and any text of an exception in play (the record's, an argument's, or the one
  being handled right now: ``traceback.format_exc()`` output) is cut out of it;
* warnings are logged as ``file:line: Category`` only (logger ``py.warnings``; records that
  ``logging.captureWarnings`` makes are reduced the same way);
* uncaught exceptions (main thread and other threads) are logged the same way, no traceback.

Policy: a log line may name a session id, a count, a reason code, an exception type and a code
location; never a value taken from a message. Stack frames (file, line, function) come from code,
not data, so they stay. Core-level: standard library only.
"""
from __future__ import annotations

import logging
import re
import sys
import threading
import warnings
from collections.abc import Callable
from types import TracebackType
from typing import Any

__all__ = ["install", "uninstall", "installed", "exception_summary", "LOGGER_NAME"]

LOGGER_NAME = "homework_monitor.uncaught"
_CHAIN_DEPTH = 4
# Exception text shorter than this is not cut out of messages (it would match ordinary words).
_MIN_REDACT_LEN = 6
_WARNING_HEAD = re.compile(r"^(?P<where>.*?:\d+): (?P<category>\w+)(:|$)")

_lock = threading.Lock()
_previous_factory: Callable[..., logging.LogRecord] | None = None
_previous_excepthook: Callable[..., Any] | None = None
_previous_threading_excepthook: Callable[..., Any] | None = None
_previous_showwarning: Callable[..., Any] | None = None


def _location(tb: TracebackType | None) -> str:
    if tb is None:
        return ""
    while tb.tb_next is not None:  # the innermost frame: where it was raised
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    parts = code.co_filename.replace("\\", "/").split("/")
    return f" at {'/'.join(parts[-2:])}:{tb.tb_lineno} in {code.co_name}"


def exception_summary(exc: BaseException) -> str:
    """``Type at folder/file.py:line in function``, with up to 4 chained causes; never the message."""
    parts: list[str] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen and len(parts) < _CHAIN_DEPTH:
        seen.add(id(cur))
        parts.append(f"{type(cur).__module__}.{type(cur).__qualname__}".removeprefix("builtins.")
                     + _location(cur.__traceback__))
        cur = cur.__cause__ or (None if cur.__suppress_context__ else cur.__context__)
    return " <- ".join(parts)


def _chain(exc: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and exc not in out and len(out) < 16:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _texts_of(exc: BaseException) -> set[str]:
    """Every rendering of an exception's message that may show up inside a log line."""
    texts: set[str] = set()
    for render in (str, repr):
        try:
            texts.add(render(exc))
        except Exception:  # a broken __str__ must not break logging
            pass
    texts.update(a for a in getattr(exc, "args", ()) if isinstance(a, str))
    for attr in ("object", "input", "msg", "message"):  # UnicodeError.object and friends
        value = getattr(exc, attr, None)
        if isinstance(value, str):
            texts.add(value)
            texts.add(repr(value))
    return {t for t in texts if len(t) >= _MIN_REDACT_LEN}


def _carries_value(obj: object) -> bool:
    # Kafka/Faust records and events (``.value``), pydantic models (``model_dump``).
    return (hasattr(obj, "model_dump") and not isinstance(obj, type)) or (
        hasattr(obj, "value") and hasattr(obj, "key") and not isinstance(obj, type))


def _safe_arg(arg: object, found: list[BaseException], depth: int = 0) -> object:
    if isinstance(arg, BaseException):
        found.extend(_chain(arg))
        return exception_summary(arg)
    if isinstance(arg, bytes | bytearray | memoryview):
        return f"<{len(arg)} bytes>"
    if isinstance(arg, str | int | float | bool | type(None)):
        return arg
    if depth < 2:
        if isinstance(arg, tuple | list | set | frozenset):
            return [_safe_arg(a, found, depth + 1) for a in arg]
        if isinstance(arg, dict):
            return {k: _safe_arg(v, found, depth + 1) for k, v in arg.items()}
    if _carries_value(arg):
        return f"<{type(arg).__name__}>"
    return arg


def _redact_record(record: logging.LogRecord) -> logging.LogRecord:
    found: list[BaseException] = []
    exc_note = ""
    if record.exc_info and record.exc_info[1] is not None:
        exc = record.exc_info[1]
        found.extend(_chain(exc))
        exc_note = f" [{exception_summary(exc)}]"
    record.exc_info = None
    record.exc_text = None
    msg: object = record.msg
    if isinstance(msg, BaseException):
        found.extend(_chain(msg))
        msg = exception_summary(msg)
    args = record.args
    if isinstance(args, dict):  # logging's single-mapping form: log.info("%(a)s", {"a": ...})
        args = {k: _safe_arg(v, found) for k, v in args.items()}
    elif args:
        args = tuple(_safe_arg(a, found) for a in args)
    handling = sys.exc_info()[1]  # e.g. log.error("%s", traceback.format_exc()) inside an except
    if handling is not None:
        found.extend(_chain(handling))
    try:
        text = str(msg) % args if args else str(msg)
    except Exception:  # a malformed format string: keep the pieces, reduced above
        text = f"{msg} {args!r}"
    if found:
        for t in sorted({t for e in found for t in _texts_of(e)}, key=len, reverse=True):
            if t in text:
                text = text.replace(t, "<redacted>")
    if record.name == "py.warnings":
        head = _WARNING_HEAD.match(text)
        text = f"{head['where']}: {head['category']}" if head else "warning (text withheld)"
    record.msg = text + exc_note
    record.args = ()
    return record


def _factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
    assert _previous_factory is not None
    return _redact_record(_previous_factory(*args, **kwargs))


def _showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    # The message may quote a value (pydantic's serializer warnings do): category and place only.
    logging.getLogger("py.warnings").warning("%s:%s: %s", filename, lineno, category.__name__)


def _log_uncaught(exc_type: type[BaseException], exc: BaseException | None, where: str) -> None:
    if exc is None or issubclass(exc_type, KeyboardInterrupt | SystemExit):
        return
    logging.getLogger(LOGGER_NAME).critical("uncaught exception in %s: %s", where, exception_summary(exc))


def _excepthook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if issubclass(exc_type, KeyboardInterrupt) and _previous_excepthook is not None:
        _previous_excepthook(exc_type, exc, tb)
        return
    _log_uncaught(exc_type, exc, "main thread")


def _threading_excepthook(hook_args: threading.ExceptHookArgs) -> None:
    name = hook_args.thread.name if hook_args.thread is not None else "thread"
    _log_uncaught(hook_args.exc_type, hook_args.exc_value, name)


def installed() -> bool:
    return _previous_factory is not None


def install() -> None:
    """Install the guard for the whole process (idempotent). The CLI calls it first thing."""
    global _previous_factory, _previous_excepthook, _previous_threading_excepthook, _previous_showwarning
    with _lock:
        if _previous_factory is not None:
            return
        _previous_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_factory)
        _previous_excepthook, sys.excepthook = sys.excepthook, _excepthook
        _previous_threading_excepthook, threading.excepthook = threading.excepthook, _threading_excepthook
        _previous_showwarning, warnings.showwarning = warnings.showwarning, _showwarning


def uninstall() -> None:
    """Undo :func:`install` (tests)."""
    global _previous_factory, _previous_excepthook, _previous_threading_excepthook, _previous_showwarning
    with _lock:
        if _previous_factory is None:
            return
        logging.setLogRecordFactory(_previous_factory)
        if _previous_showwarning is not None:
            warnings.showwarning = _previous_showwarning
        if _previous_excepthook is not None:
            sys.excepthook = _previous_excepthook
        if _previous_threading_excepthook is not None:
            threading.excepthook = _previous_threading_excepthook
        _previous_factory = _previous_excepthook = _previous_threading_excepthook = _previous_showwarning = None
