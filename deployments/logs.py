"""Replica logging of the errors a client causes: one line with the code and the trace id, no traceback.

Ray Serve logs every exception a deployment method raises as `Request failed.` with the full traceback
(ray/serve/_private/replica.py, `_handle_errors_and_metrics`), at ERROR, before it re-raises it to the
caller; a deployment cannot stop that by catching and re-raising. A FaceNotFound raised in the
FaceAnalyzer therefore left a screen of traceback per 422. `quiet_client_errors` installs a filter on
Serve's logger in the replica's process that rewrites those records when the exception (or the one a
`RayTaskError` wraps) is a `ClientError` or a `JobCanceled`: one INFO line naming the code, the status,
the subject and the trace id. Every other exception (a server error) keeps its ERROR record and its
traceback. The client's detail text stays out of the line (it may echo what the client sent).

The project's own loggers (`kiss_core.*`, `kissgen.*`) are handed to Serve's logger too: without that,
Python's last-resort handler drops their INFO lines (the ingress's one line per client error among them)
and writes their warnings, unformatted, to the worker's stderr file only.
"""

from __future__ import annotations

import logging

from kiss_core.errors import ClientError, JobCanceled, unwrap_remote
from kiss_core.tracing import error_trace_id

SERVE_LOGGER = "ray.serve"
PROJECT_LOGGERS = ("kiss_core", "kissgen")


def describe_expected(exc: BaseException, trace_id: str | None = None) -> str | None:
    """The one-line description of a client error or a cancel (None for anything else)."""
    cause = unwrap_remote(exc)
    trace = trace_id or error_trace_id(exc) or error_trace_id(cause) or "-"
    if isinstance(cause, ClientError):
        subject = f" subject={cause.subject}" if cause.subject else ""
        return f"client error code={cause.code} status={cause.status}{subject} trace_id={trace}"
    if isinstance(cause, JobCanceled):
        return f"job canceled code=canceled trace_id={trace}"
    return None


class ClientErrorFilter(logging.Filter):
    """Turns Serve's `Request failed.` + traceback of a client error into one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        line = describe_expected(exc)
        if line is None:
            return True  # a server error: keep the traceback
        record.msg = f"Request refused: {line}"
        record.args = ()
        record.exc_info = None
        record.exc_text = None
        record.levelno = logging.INFO
        record.levelname = "INFO"
        return True


class _ToServeLog(logging.Handler):
    """Hands the project's records to Serve's logger, so they land in the replica's log file (with the
    request id and Serve's format) instead of Python's last-resort stderr handler, which drops INFO."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger(SERVE_LOGGER).handle(record)


def setup_replica_logging() -> None:
    """In a Serve replica (call from each deployment's constructor; idempotent): client errors are one
    line (the filter on Serve's logger, which Serve keeps when it reconfigures its handlers), and the
    project's loggers (`kiss_core.*`, `kissgen.*`) write INFO and up into the replica's log."""
    serve_logger = logging.getLogger(SERVE_LOGGER)
    if not any(isinstance(f, ClientErrorFilter) for f in serve_logger.filters):
        serve_logger.addFilter(ClientErrorFilter())
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(h, _ToServeLog) for h in logger.handlers):
            logger.addHandler(_ToServeLog())
            logger.setLevel(logging.INFO)
            logger.propagate = False
