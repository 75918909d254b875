"""Keep secrets out of logs: signed URLs, tokens and Authorization headers are redacted.

:func:`redact` rewrites a string; :class:`RedactingFilter` applies it to every log record
(message and arguments); :func:`configure_logging` installs it with a one-line JSON
formatter (structured logs: time, level, logger, message and any ``extra`` fields).
"""
from __future__ import annotations

import json
import logging
import re

MASK = "***"

#: Query parameters that carry credentials: Azure SAS (sig, se, sp, sv, st, sr, skoid, ...),
#: AWS/GCS presigned (X-Amz-*, X-Goog-*), generic token/key parameters.
_SECRET_PARAMS = (r"sig|signature|token|access_token|api[_-]?key|apikey|key|password|secret|"
                  r"s[eoptrv]|sk[a-z]+|spr|srt|ss|x-amz-[a-z-]+|x-goog-[a-z-]+")
_QUERY = re.compile(rf"(?i)([?&](?:{_SECRET_PARAMS})=)[^&#\s'\"]+")
_AUTH_HEADER = re.compile(r"(?i)((?:proxy-)?authorization['\"]?\s*[:=]\s*['\"]?)(?:(bearer|basic|token)\s+)?[^\s'\",}]+")
_BARE_TOKEN = re.compile(r"(?i)\b((?:token|api[_-]?key|password|secret)\s*[=:]\s*)[^\s&'\",}]+")


def redact(text: str) -> str:
    """``text`` with signed-URL query values, tokens and Authorization header values masked."""
    text = _AUTH_HEADER.sub(lambda m: m.group(1) + (m.group(2) + " " if m.group(2) else "") + MASK, text)
    text = _QUERY.sub(lambda m: m.group(1) + MASK, text)
    return _BARE_TOKEN.sub(lambda m: m.group(1) + MASK, text)


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
        out = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname,
               "logger": record.name, "message": record.getMessage()}
        out.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return redact(json.dumps(out, default=str))


def configure_logging(level: int | str = "INFO", logger: logging.Logger | None = None,
                      stream=None) -> logging.Handler:
    """Attach a redacting JSON handler to ``logger`` (default: the root logger); returns it."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    target = logger or logging.getLogger()
    target.addHandler(handler)
    target.setLevel(level)
    return handler
