"""Every error as RFC 9457 problem+json: our typed client errors, storage outages, routing errors, and
whatever else went wrong (a 500 that says nothing about the server's insides)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments.logs import describe_expected
from kiss_core.errors import PROBLEM_CONTENT_TYPE, ClientError, StorageError, problem, unwrap_remote
from kiss_core.tracing import error_trace_id, trace_id_from

log = logging.getLogger("kissgen.ingress")

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def problem_response(body: dict[str, Any], headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM_CONTENT_TYPE, headers=headers)


def log_client_error(request: Request, exc: BaseException) -> None:
    """One INFO line per client error (code, status, subject, trace id), never a traceback: the trace
    id is the one the error's stage span tagged, else the request's incoming `traceparent`."""
    trace_id = error_trace_id(exc) or error_trace_id(unwrap_remote(exc)) or trace_id_from(request.headers)
    line = describe_expected(exc, trace_id)
    log.info("%s %s -> %s", request.method, request.url.path, line)


async def client_error(request: Request, exc: ClientError) -> JSONResponse:
    log_client_error(request, exc)
    return problem_response(exc.to_problem(instance=request.url.path), exc.headers() or None)


async def storage_error(request: Request, exc: StorageError) -> JSONResponse:
    """Object storage unreachable after retries: the client should come back, nothing is lost."""
    log.warning("storage unavailable on %s: %s", request.url.path, exc)
    body = problem(
        code="storage_unavailable",
        status=503,
        title="Storage is unavailable; retry later",
        detail="The object store did not answer in time.",
        instance=request.url.path,
    )
    return problem_response(body, {"Retry-After": "10"})


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Routing errors (unknown path, wrong method) in the same problem+json shape as ours."""
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    title = str(exc.detail) if exc.detail else "HTTP error"
    detail = f"{request.method} {request.url.path}: {title}"
    return problem_response(
        problem(code=code, status=exc.status_code, title=title, detail=detail, instance=request.url.path),
        headers=exc.headers,
    )


async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """A client error raised in another replica arrives wrapped: unwrapped, it keeps its 4xx."""
    cause = unwrap_remote(exc)
    if isinstance(cause, ClientError):
        log_client_error(request, exc)
        return problem_response(cause.to_problem(instance=request.url.path), cause.headers() or None)
    log.exception("unhandled error on %s", request.url.path)
    return problem_response(
        problem(
            code="internal_error",
            status=500,
            title="Internal error",
            detail="The server failed; retry later.",
        )
    )


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ClientError, client_error)  # type: ignore[arg-type]
    app.add_exception_handler(StorageError, storage_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, unexpected_error)
