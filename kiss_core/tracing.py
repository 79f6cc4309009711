"""OpenTelemetry tracing, set up once per process: one trace per job across every deployment.

Export is configured by the standard `OTEL_EXPORTER_OTLP_*` variables (OTLP/HTTP); with none set,
spans are still created (so trace ids propagate and appear in logs) but nothing is exported.
Across process boundaries the W3C trace context travels as a plain `dict[str, str]` carrier
(`inject_context` on the sending side, `stage_span(carrier=...)` on the receiving side).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_TRACER_NAME = "kiss_core"

_lock = threading.Lock()
_provider: TracerProvider | None = None
_propagator = TraceContextTextMapPropagator()


def export_enabled() -> bool:
    """True when an OTLP endpoint is configured (the one place this project reads OTEL_* itself)."""
    return any(os.environ.get(name) for name in ENDPOINT_VARIABLES)


def setup_tracing(service_name: str) -> None:
    """Installs the SDK tracer provider; later calls in the same process do nothing, so every
    deployment can call it from its constructor."""
    global _provider
    with _lock:
        if _provider is not None:
            return
        resource = Resource.create({"service.name": service_name, "process.pid": os.getpid()})
        provider = TracerProvider(resource=resource)
        if export_enabled():
            # The exporter reads endpoint, headers, timeout and compression from OTEL_* itself.
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        _provider = provider


def inject_context() -> dict[str, str]:
    """The current span's W3C `traceparent` (and `tracestate`), to hand to another process."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier


@contextmanager
def stage_span(name: str, carrier: dict[str, str] | None = None, **attributes: Any) -> Iterator[Span]:
    """A span for one stage. With a carrier it continues the trace of whoever sent it (another
    process); with None it is a child of the current span. Exceptions are recorded on the span,
    which gets error status, and re-raised."""
    context = _propagator.extract(carrier) if carrier is not None else None
    tracer = trace.get_tracer(_TRACER_NAME)
    clean = {key: _attribute(value) for key, value in attributes.items() if value is not None}
    with tracer.start_as_current_span(
        name, context=context, attributes=clean, record_exception=True, set_status_on_exception=True
    ) as span:
        try:
            yield span
        except Exception as exc:
            _tag_trace_id(exc, span)
            raise


def error_trace_id(exc: BaseException) -> str | None:
    """The trace id of the innermost stage span an exception left (stage_span tags it), if any."""
    value = getattr(exc, "trace_id", None)
    return value if isinstance(value, str) else None


def trace_id_from(carrier: Mapping[str, str] | None) -> str | None:
    """The 32-hex trace id of a W3C carrier (`traceparent`), or None without a valid one."""
    parts = (carrier or {}).get("traceparent", "").split("-")
    if len(parts) >= 3 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        return parts[1]
    return None


def _tag_trace_id(exc: BaseException, span: Span) -> None:
    """Remember on the exception which trace it ended (the innermost span wins), so a log line written
    where it is handled can name the trace; not pickled along (`ClientError.__reduce__`)."""
    if error_trace_id(exc) is not None:
        return
    trace_id = span.get_span_context().trace_id
    if trace_id:
        with contextlib.suppress(AttributeError, TypeError):
            exc.trace_id = format(trace_id, "032x")  # type: ignore[attr-defined]


def force_flush(timeout_ms: int = 5000) -> bool:
    """Exports what is buffered; call before a process exits or a test inspects the collector."""
    if _provider is not None:
        return _provider.force_flush(timeout_ms)
    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    return bool(flush(timeout_ms)) if flush is not None else True


def _attribute(value: Any) -> Any:
    """OTel accepts str/bool/int/float (and sequences of them); anything else becomes its str."""
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str | bool | int | float) for v in value):
        return list(value)
    return str(value)
