"""Secrets never reach a log line: one ``logging.Filter`` on every handler rewrites each record.

cloudstate's own code logs no secret, but libraries it drives do at DEBUG: botocore writes its
signed requests (the ``Authorization`` header with ``Credential=AKIA…``, the
``X-Amz-Security-Token`` header, the canonical request with the session token), httpx and
libcloud their headers. A filter on a *handler* sees every record that reaches it, whichever
logger made it, so one ``RedactingFilter`` per handler covers third-party loggers too (a filter
on a logger would not: it sees only records logged on that very logger).

Two nets, both cheap: patterns for the shapes secrets take in requests (named headers and
fields, AWS key ids, bearer tokens, ``cst_`` API tokens, ``whsec_`` webhook secrets), and the
literal values of every credential a driver was built with (``remember``), whatever shape they
are printed in.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

REDACTED = "[redacted]"
MIN_REMEMBERED = 8
"""Shorter credential values are not remembered: replacing them would mangle ordinary text."""

_NAMES = (
    r"authorization|proxy-authorization|x-amz-security-token|x-amz-credential|x-amz-signature"
    r"|aws_secret_access_key|secret_access_key|secretaccesskey|aws_session_token|session_token"
    r"|sessiontoken|securitytoken|security_token|access_token|refresh_token|client_secret"
    r"|api_key|apikey|password|passwd|secret|webhook-signature|cookie|set-cookie"
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # 'Name': b'value' / "name": "value" (dict and header reprs, JSON)
    (
        re.compile(rf"""(?i)(['"](?:{_NAMES})['"]\s*:\s*b?)(['"])(?:\\.|(?!\2).)*\2"""),
        rf"\1'{REDACTED}'",
    ),
    # name=value (query strings, key=value lists) and name: value / name:value (header lines,
    # botocore's canonical request): up to the end of the value
    (
        re.compile(
            rf"""(?i)(?<![\w-])((?:{_NAMES})\s*(?:=|:)\s*)(?![\s'"]*\[redacted\])[^\s&,;'"]+"""
        ),
        rf"\1{REDACTED}",
    ),
    # what is left of an Authorization value: AWS4 credential scope and signature, bearer tokens
    (re.compile(r"(?i)\b(Credential|Signature)=[^\s,&'\"]+"), rf"\1={REDACTED}"),
    (re.compile(r"(?i)\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}"), rf"\1 {REDACTED}"),
    # secrets recognisable by their shape alone
    (re.compile(r"\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{12,}\b"), REDACTED),
    (re.compile(r"\bcst_[A-Za-z0-9_-]{8,}"), f"cst_{REDACTED}"),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]{4,}"), f"whsec_{REDACTED}"),
)

_remembered: set[str] = set()
_remembered_pattern: re.Pattern[str] | None = None
_lock = threading.Lock()


def remember(values: Iterable[str]) -> None:
    """Redact these literal values from now on (a driver's credentials, as it is built)."""
    global _remembered_pattern
    fresh = {v for v in values if isinstance(v, str) and len(v) >= MIN_REMEMBERED}
    with _lock:
        if fresh <= _remembered:
            return
        _remembered.update(fresh)
        ordered = sorted(_remembered, key=len, reverse=True)  # longest first: no partial leftovers
        _remembered_pattern = re.compile("|".join(re.escape(v) for v in ordered))


def redact(text: str) -> str:
    """``text`` with every secret it shows replaced by ``[redacted]``."""
    pattern = _remembered_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for compiled, replacement in _PATTERNS:
        text = compiled.sub(replacement, text)
    return text


_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class RedactingFilter(logging.Filter):
    """Rewrites a record in place (message, structured extras, exception text); never drops one.

    The message is formatted once here and kept without its arguments, so every handler after
    this one sees the redacted text (the rewrite is idempotent).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str):
                record.__dict__[key] = redact(value)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install(handlers: Iterable[logging.Handler] | None = None) -> int:
    """Put one ``RedactingFilter`` on each handler (default: every handler of every logger
    there is now, the root's included); returns how many got one."""
    if handlers is None:
        handlers = _every_handler()
    added = 0
    for handler in handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
            added += 1
    return added


def _every_handler() -> list[logging.Handler]:
    loggers = [logging.getLogger()] + [
        logger
        for logger in list(logging.Logger.manager.loggerDict.values())
        if isinstance(logger, logging.Logger)
    ]
    return [handler for logger in loggers for handler in logger.handlers]
