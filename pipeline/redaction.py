"""Keep secrets out of every output: signed URLs, tokens and Authorization headers are redacted.

:func:`redact` rewrites a string and :func:`redact_json` every string inside a JSON-like
value (store attributes, STAC items, journal lines). :func:`install_redaction` makes the
process redact on its own: every log record (message, arguments and traceback, whatever
logger or handler: ours, Prefect's, Dask's, GDAL's through rasterio), every warning and
every uncaught exception's traceback. ``import pipeline`` installs it, so the CLI, the
Python API, the Prefect flows and the Dask workers that run pipeline code all redact.
:func:`configure_logging` adds a one-line JSON handler (structured logs).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import traceback
import warnings
from typing import Any

MASK = "***"

#: Query parameters that carry credentials: Azure SAS (sig, se, sp, sv, st, sr, skoid, ...),
#: AWS/GCS presigned (X-Amz-*, X-Goog-*), generic token/key parameters.
_SECRET_PARAMS = (
    r"sig|signature|token|access_token|refresh_token|id_token|api[_-]?key|apikey|key|password|passwd|"
    r"pwd|secret|client_secret|code|auth|credential|credentials|session|sessionid|"
    r"s[eoptrv]|sk[a-z]+|spr|srt|ss|x-amz-[a-z-]+|x-goog-[a-z-]+"
)
_QUERY = re.compile(rf"(?i)([?&](?:{_SECRET_PARAMS})=)[^&#\s'\"]+")
#: the same inside a percent-encoded URL (an href carried in another URL's query): %3F / %26 ... %3D value
_ENCODED_QUERY = re.compile(rf"(?i)((?:%3F|%26)(?:{_SECRET_PARAMS})%3D)(?:(?!%26|%23)[^&#\s'\"])+")
#: the password of ``scheme://user:password@host``
_USERINFO = re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^/\s:@'\"]*:)[^@/\s'\"]+(@)")
_AUTH_HEADER = re.compile(
    r"(?i)((?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?)(?:(bearer|basic|token)\s+)?[^\s'\",}]+"
)
#: a credential outside a query string: "token=...", "sig=..." at the start of a SAS token, "password: ..."
_BARE_TOKEN = re.compile(
    r"(?i)(?<![\w-])((?:token|access_token|api[_-]?key|password|secret|sig|signature|"
    r"x-amz-signature|x-amz-security-token|x-goog-signature)\s*[=:]\s*)[^\s&'\",}]+"
)


def redact(text: str) -> str:
    """``text`` with signed-URL query values (also percent-encoded ones), URL passwords, tokens and
    Authorization header values masked."""
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + (m.group(2) + " " if m.group(2) else "") + MASK, text)
    text = _USERINFO.sub(lambda m: m.group(1) + MASK + m.group(2), text)
    text = _ENCODED_QUERY.sub(lambda m: m.group(1) + MASK, text)
    text = _QUERY.sub(lambda m: m.group(1) + MASK, text)
    return _BARE_TOKEN.sub(lambda m: m.group(1) + MASK, text)


def redact_json(value: Any) -> Any:
    """``value`` (dicts, lists, strings, numbers) with every string passed through :func:`redact`."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(str(k)) if isinstance(k, str) else k: redact_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_json(v) for v in value]
    return value


def redact_record(record: logging.LogRecord) -> logging.LogRecord:
    """``record`` with its message, arguments, traceback and stack redacted, in place.

    The traceback is formatted and redacted once, here, and the exception detached, so no
    formatter can render the original text again.
    """
    record.msg = redact(record.getMessage())
    record.args = None
    if record.exc_info:
        text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        record.exc_text = redact(text)
        record.exc_info = None
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    return record


_installed = threading.Lock()
_INSTALLED = False


#: environment variable: "1" prints warnings as one ``warning: ...`` line (set by the command line, inherited
#: by its Dask worker processes)
SHORT_WARNINGS_ENV = "EOCUBE_SHORT_WARNINGS"


def install_redaction() -> None:
    """Redact every log record, warning and uncaught traceback of this process (idempotent).

    A log record factory redacts records as they are made, before any filter, handler or
    formatter sees them (Prefect's console and API handlers, Dask's, rasterio's GDAL
    messages); ``warnings.formatwarning`` and the exception hooks redact the rest.
    """
    global _INSTALLED
    with _installed:
        if _INSTALLED:
            return
        make_record = logging.getLogRecordFactory()

        def redacting_factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            return redact_record(make_record(*args, **kwargs))

        logging.setLogRecordFactory(redacting_factory)
        format_warning = warnings.formatwarning

        def redacting_formatwarning(message, category, filename, lineno, line=None) -> str:  # noqa: ANN001
            if os.environ.get(SHORT_WARNINGS_ENV) == "1":  # the command line's: one line, no source
                return redact(f"warning: {' '.join(str(message).split())}\n")
            return redact(format_warning(message, category, filename, lineno, line))

        warnings.formatwarning = redacting_formatwarning
        excepthook = sys.excepthook

        def redacting_excepthook(kind, value, tb) -> None:  # noqa: ANN001
            sys.stderr.write(redact("".join(traceback.format_exception(kind, value, tb))))

        if excepthook is sys.__excepthook__:  # leave IPython's and other custom hooks alone
            sys.excepthook = redacting_excepthook

        def redacting_threading_hook(hook_args) -> None:  # noqa: ANN001
            text = "".join(traceback.format_exception(hook_args.exc_type, hook_args.exc_value, hook_args.exc_traceback))
            sys.stderr.write(redact(f"Exception in thread {getattr(hook_args.thread, 'name', '?')}:\n{text}"))

        if threading.excepthook is threading.__excepthook__:
            threading.excepthook = redacting_threading_hook
        _INSTALLED = True


class RedactingFilter(logging.Filter):
    """A logging filter that redacts every record's message in place (never drops records)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message`` and ``extra`` fields."""

    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return redact(json.dumps(out, default=str))


def configure_logging(level: int | str = "INFO", logger: logging.Logger | None = None, stream=None) -> logging.Handler:
    """Attach a redacting JSON handler to ``logger`` (default: the root logger); returns it."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    target = logger or logging.getLogger()
    target.addHandler(handler)
    target.setLevel(level)
    return handler
