"""Tracing across real processes, exported over real OTLP/HTTP to a receiver in the test process.

Each traced process is a fresh Python subprocess, because the tracer provider is global per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

from tests.support.otlp import OtlpReceiver, otlp_receiver  # noqa: F401

REPO = Path(__file__).resolve().parents[2]

# argv: service, tag, carrier JSON ("" = start a new trace), fail ("1" = the child stage raises)
SCRIPT = textwrap.dedent(
    """
    import json, sys
    from kiss_core.tracing import force_flush, inject_context, setup_tracing, stage_span

    service, tag, carrier, fail = sys.argv[1:5]
    setup_tracing(service)
    setup_tracing("ignored-second-call")
    with stage_span(f"{tag}.outer", json.loads(carrier) if carrier else {}, tag=tag, frames=3) as outer:
        with stage_span(f"{tag}.inner", None, tag=tag):
            out = inject_context()
        if fail == "1":
            try:
                with stage_span(f"{tag}.failing", None, tag=tag):
                    raise RuntimeError("boom")
            except RuntimeError:
                pass
    assert force_flush(5000)
    print(json.dumps(out))
    """
)


def run_traced(
    service: str, tag: str, carrier: dict[str, str] | None, env: dict[str, str], fail: bool = False
):
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            service,
            tag,
            json.dumps(carrier) if carrier else "",
            "1" if fail else "0",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def test_span_tree_across_two_processes_shares_one_trace(otlp_receiver: OtlpReceiver) -> None:  # noqa: F811
    tag_a, tag_b = f"a{uuid.uuid4().hex[:8]}", f"b{uuid.uuid4().hex[:8]}"
    env = clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.endpoint, OTEL_BSP_SCHEDULE_DELAY="100")

    carrier_a, _ = run_traced("kiss-ingress", tag_a, None, env)
    assert carrier_a["traceparent"].startswith("00-")
    run_traced("kiss-generator", tag_b, carrier_a, env, fail=True)

    names = {f"{t}.{n}" for t in (tag_a, tag_b) for n in ("outer", "inner")} | {f"{tag_b}.failing"}
    spans = otlp_receiver.wait_for(lambda got: names <= {s["name"] for s in got}, timeout=10)
    by_name = {s["name"]: s for s in spans if s["name"] in names}

    a_outer, a_inner = by_name[f"{tag_a}.outer"], by_name[f"{tag_a}.inner"]
    b_outer, b_inner, b_failing = (by_name[f"{tag_b}.{n}"] for n in ("outer", "inner", "failing"))

    assert len({s["trace_id"] for s in by_name.values()}) == 1
    assert a_outer["parent_span_id"] is None
    assert a_inner["parent_span_id"] == a_outer["span_id"]
    # The carrier process A handed over was taken inside its inner span: B continues from there.
    assert carrier_a["traceparent"].split("-")[2] == a_inner["span_id"]
    assert b_outer["parent_span_id"] == a_inner["span_id"]
    assert b_inner["parent_span_id"] == b_outer["span_id"]
    assert b_failing["parent_span_id"] == b_outer["span_id"]

    assert a_outer["service_name"] == "kiss-ingress"
    assert b_outer["service_name"] == "kiss-generator"
    assert a_outer["pid"] != b_outer["pid"]
    assert isinstance(a_outer["pid"], int)
    assert a_outer["attributes"] == {"tag": tag_a, "frames": 3}

    assert b_failing["status_code"] == 2
    assert "exception" in b_failing["events"]
    assert b_outer["status_code"] == 0


def test_nothing_is_exported_without_otel_variables(otlp_receiver: OtlpReceiver) -> None:  # noqa: F811
    tag = f"quiet{uuid.uuid4().hex[:8]}"
    # The receiver is running, but nothing names it: no span may reach it, and nothing may fail.
    carrier, result = run_traced("kiss-quiet", tag, None, clean_env(), fail=True)

    # Spans are still real and sampled, so trace ids propagate even when nothing is exported.
    version, trace_id, span_id, flags = carrier["traceparent"].split("-")
    assert version == "00"
    assert int(flags, 16) & 1  # sampled
    assert int(trace_id, 16) and int(span_id, 16)
    assert "Traceback" not in result.stderr
    assert not [
        s for s in otlp_receiver.spans() if s["name"].startswith(tag) or s["service_name"] == "kiss-quiet"
    ]


def test_gzip_export_is_decoded(otlp_receiver: OtlpReceiver) -> None:  # noqa: F811
    tag = f"gz{uuid.uuid4().hex[:8]}"
    env = clean_env(
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=otlp_receiver.endpoint + "/v1/traces",
        OTEL_EXPORTER_OTLP_COMPRESSION="gzip",
    )
    run_traced("kiss-gzip", tag, None, env)
    spans = otlp_receiver.wait_for(lambda got: any(s["name"] == f"{tag}.outer" for s in got), timeout=10)
    assert {s["name"] for s in spans if s["service_name"] == "kiss-gzip"} >= {f"{tag}.outer", f"{tag}.inner"}
