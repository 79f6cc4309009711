"""Ingress deployment (CPU): the HTTP API. Validates, persists the job, answers 202, runs the job.

Every endpoint first asks `AccessControl.admit` who the caller is (API key -> tenant, per-key rate
limit); everything after that is scoped to the caller's tenant.

It holds deployment handles and passes their responses along unresolved: conditioning tensors go
from the IdentityEncoder to the VideoGenerator through the Ray object store, never through here.
"""

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ValidationError
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployments import metrics
from kiss_core.errors import (
    PROBLEM_CONTENT_TYPE,
    ClientError,
    ContentNotReady,
    InvalidRequest,
    PayloadTooLarge,
    StorageError,
    UnsupportedMedia,
    problem,
    unwrap_remote,
)
from kiss_core.generation.provenance.verify import sniff_mime, verify_media
from kiss_core.jobs.access import AccessControl, Principal
from kiss_core.jobs.admission import JobAdmission
from kiss_core.jobs.retention import install_lifecycle, sweep
from kiss_core.jobs.runner import JobRunner
from kiss_core.jobs.store import JobStore
from kiss_core.jobs.webhooks import WebhookSender
from kiss_core.keys import OUTPUT_NAMES
from kiss_core.schemas import (
    SUBJECTS,
    TERMINAL_STATUSES,
    Attestation,
    JobResult,
    StageRequest,
    VideoParams,
    utcnow,
)
from kiss_core.settings import Settings
from kiss_core.storage import open_store
from kiss_core.tracing import setup_tracing

log = logging.getLogger("kissgen.ingress")

_PARAM_FIELDS = tuple(VideoParams.model_fields)
_FILE_FIELDS = tuple(f"subject_{s}" for s in SUBJECTS)
_CONSENT_FIELDS = {f"consent_{s}": s for s in SUBJECTS}
_CONSENT_REF_FIELDS = {f"consent_ref_{s}": s for s in SUBJECTS}
_WEBHOOK_FIELD = "webhook_url"
_TEXT_FIELDS = (*_PARAM_FIELDS, *_CONSENT_FIELDS, *_CONSENT_REF_FIELDS, _WEBHOOK_FIELD)
ParsedCreate = tuple[VideoParams, Attestation | None, dict[str, bytes], str | None]
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20

app = FastAPI(
    title="kissgen",
    version="0.1.0",
    description=(
        "Photos of two consenting adults in, a short kiss video out. Errors are RFC 9457 problem+json."
    ),
)


def problem_response(body: dict[str, Any], headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=body["status"], media_type=PROBLEM_CONTENT_TYPE, headers=headers)


@app.exception_handler(ClientError)
async def _client_error(request: Request, exc: ClientError) -> JSONResponse:
    return problem_response(exc.to_problem(instance=request.url.path), exc.headers() or None)


@app.exception_handler(StorageError)
async def _storage_error(request: Request, exc: StorageError) -> JSONResponse:
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


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


@app.exception_handler(StarletteHTTPException)
async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Routing errors (unknown path, wrong method) in the same problem+json shape as ours."""
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    title = str(exc.detail) if exc.detail else "HTTP error"
    detail = f"{request.method} {request.url.path}: {title}"
    return problem_response(
        problem(code=code, status=exc.status_code, title=title, detail=detail, instance=request.url.path),
        headers=exc.headers,
    )


@app.exception_handler(Exception)
async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    cause = unwrap_remote(exc)
    if isinstance(cause, ClientError):
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


def _request_schema() -> dict[str, Any]:
    """OpenAPI for the multipart body, which the handler parses itself to control limits and errors."""
    photo = {"type": "string", "format": "binary"}
    consent = {
        f"consent_{s}": {
            "type": "boolean",
            "description": f"Attests that the person in subject_{s} is an adult and consented. Must be true.",
        }
        for s in SUBJECTS
    }
    references = {
        f"consent_ref_{s}": {"type": "string", "maxLength": 200, "description": "Your consent record id."}
        for s in SUBJECTS
    }
    properties = {
        "subject_a": {**photo, "description": "Photo of person A (JPEG, PNG, WebP, BMP, TIFF)."},
        "subject_b": {**photo, "description": "Photo of person B."},
        **consent,
        **references,
        **VideoParams.model_json_schema()["properties"],
        _WEBHOOK_FIELD: {
            "type": "string",
            "format": "uri",
            "description": "https URL that receives video.completed / video.failed, signed per Standard"
            " Webhooks. Must resolve to public addresses only.",
        },
    }
    schema = {"type": "object", "required": [*_FILE_FIELDS, *_CONSENT_FIELDS], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


# Attestation validation errors are reported under the form field the client sent.
_CONSENT_FIELD_OF = {
    **{f"{s}.consented": f"consent_{s}" for s in SUBJECTS},
    **{f"{s}.reference": f"consent_ref_{s}" for s in SUBJECTS},
}


def _validated(
    model: type[BaseModel],
    values: dict[str, Any],
    errors: list[dict[str, Any]],
    rename: Mapping[str, str] | None = None,
) -> Any:
    """`model` built from form values, or None with each problem appended to `errors` by form field."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"]) or "body"
            errors.append({"field": (rename or {}).get(loc, loc), "message": e["msg"]})
        return None


def _page_params(request: Request) -> tuple[int, str | None]:
    """`limit` (1..100) and the opaque `cursor` (alias `page_token`) of GET /v1/videos."""
    raw = request.query_params.get("limit", str(DEFAULT_PAGE_SIZE))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise InvalidRequest(
            f"`limit` must be an integer in 1..{MAX_PAGE_SIZE} but is {raw[:20]!r}",
            None,
            [{"field": "limit", "message": "invalid"}],
        )
    cursor = request.query_params.get("cursor") or request.query_params.get("page_token") or None
    return int(raw), cursor


class ServeStages:
    """The job's stages as deployment handles; responses are returned unresolved."""

    def __init__(self, analyzer: DeploymentHandle, identity: DeploymentHandle, generator: DeploymentHandle):
        self.analyzer = analyzer
        self.identity = identity
        self.generator = generator

    def analyze(self, image: bytes, subject: str, trace: dict[str, str]) -> DeploymentResponse:
        return self.analyzer.analyze.remote(image, subject, trace)

    def condition(self, request: StageRequest) -> DeploymentResponse:
        return self.identity.condition.remote(request)

    def generate(self, request: StageRequest, conditioning: DeploymentResponse) -> DeploymentResponse:
        return self.generator.generate.remote(request, conditioning)


# serve.ingress pickles `app` (and with it these endpoints' globals) right here, while this module is
# still loading: everything the endpoints use must be defined above this line.
@serve.ingress(app)
class VideoAPI:
    def __init__(
        self,
        analyzer: DeploymentHandle,
        identity: DeploymentHandle,
        generator: DeploymentHandle,
        settings: Settings,
    ):
        setup_tracing(f"{settings.tracing.service_name}.ingress")
        self.settings = settings
        self.store = open_store(settings.storage)
        self.jobs = JobStore(self.store)
        # Reads access.keys_file; with access.required and no keys the replica refuses to start.
        self.access = AccessControl(settings.access)
        self.webhooks = WebhookSender(settings.webhooks, self.access.webhook_secret_for)
        stages = ServeStages(analyzer, identity, generator)
        self.runner = JobRunner(self.jobs, stages, settings.jobs, webhooks=self.webhooks)
        self.admission = JobAdmission(
            self.jobs, stages, settings.limits, running=self.runner.running, webhooks=self.webhooks
        )
        install_lifecycle(self.store, settings.retention)
        self._maintenance: asyncio.Task[None] | None = None
        with contextlib.suppress(RuntimeError):  # Serve builds replicas inside their event loop
            self._start_maintenance()

    def _start_maintenance(self) -> None:
        """Recovery of orphaned jobs and the retention sweep, in the background of this replica."""
        if self._maintenance is None or self._maintenance.done():
            self._maintenance = asyncio.get_running_loop().create_task(self._maintain_forever())

    async def __del__(self) -> None:
        """Graceful shutdown (scale-down, redeploy, node drain): Serve calls this once the replica's
        requests have drained. Jobs run in the background, not as requests, so they would die with the
        process and wait for their lease to lapse; instead they are handed back at once."""
        if self._maintenance is not None:
            self._maintenance.cancel()  # must not pick the handed-back jobs up again
        handed = await self.runner.hand_back()
        if handed:
            log.info("graceful shutdown: handed back jobs %s", handed)

    async def _maintain_forever(self) -> None:
        last_sweep = float("-inf")
        loop = asyncio.get_running_loop()
        while True:
            try:
                for job_id in await self.runner.recover():
                    metrics.track_job(self.runner.start(job_id))  # the task recover() started
                if loop.time() - last_sweep >= self.settings.retention.sweep_interval_s:
                    last_sweep = loop.time()
                    report = await asyncio.to_thread(sweep, self.jobs, self.settings.retention, utcnow())
                    if report.jobs_erased or report.inputs_erased:
                        log.info("retention sweep: %s", report)
            except Exception:  # storage unreachable: try again at the next interval
                log.exception("job recovery or retention sweep failed")
            await asyncio.sleep(self.settings.jobs.recovery_interval_s)

    @app.post(
        "/v1/videos",
        status_code=202,
        openapi_extra=_request_schema(),
        summary="Create a kiss video from two photos",
        responses={202: {"description": "Accepted; poll the Location."}},
    )
    async def create_video(self, request: Request) -> JSONResponse:
        self._start_maintenance()
        principal = self._admit(request)
        params, attestation, photos, webhook_url = await self._parse_create(request)
        incoming = {k: v for k, v in request.headers.items() if k in ("traceparent", "tracestate")}
        headers: dict[str, str] = {}
        scope = {
            "tenant": principal.tenant,
            "max_tenant_jobs": principal.max_concurrent_jobs,
            "webhook_url": webhook_url,
        }
        key = request.headers.get("idempotency-key")
        if key is None:
            manifest = await self.admission.submit(params, photos, attestation, incoming, **scope)
            metrics.track_job(self.runner.start(manifest.id))
        else:
            submit = self.admission.submit_once
            manifest, replayed = await submit(key, params, photos, attestation, incoming, **scope)
            if replayed:
                headers["Idempotent-Replayed"] = "true"
            else:
                metrics.track_job(self.runner.start(manifest.id))
        headers["Location"] = f"/v1/videos/{manifest.id}"
        return JSONResponse(manifest.public(), status_code=202, headers=headers)

    @app.get("/v1/videos", summary="Your video jobs, newest first (paginated)")
    async def list_videos(self, request: Request) -> JSONResponse:
        principal = self._admit(request)
        limit, cursor = _page_params(request)
        page, next_cursor = await asyncio.to_thread(self.jobs.list_tenant, principal.tenant, limit, cursor)
        body = {
            "object": "list",
            "data": [m.public() for m in page],
            "has_more": next_cursor is not None,
            "next_cursor": next_cursor,
        }
        return JSONResponse(body)

    @app.get("/v1/videos/{video_id}", summary="The state of a video job")
    async def get_video(self, video_id: str, request: Request) -> JSONResponse:
        principal = self._admit(request)
        manifest = await asyncio.to_thread(self.jobs.get, video_id, principal.tenant)
        return JSONResponse(manifest.public())

    @app.get("/v1/videos/{video_id}/content", summary="Download the video, its thumbnail or the still")
    async def get_content(self, video_id: str, request: Request, variant: str = "video") -> Response:
        principal = self._admit(request)
        if variant not in OUTPUT_NAMES:
            raise InvalidRequest(f"`variant` must be one of {', '.join(OUTPUT_NAMES)} but is {variant!r}")
        manifest = await asyncio.to_thread(self.jobs.get, video_id, principal.tenant)
        result: JobResult | None = manifest.result
        if manifest.status != "completed" or result is None or variant not in result.keys:
            raise ContentNotReady(f"video {video_id} is {manifest.status}; `{variant}` is not available")
        key = result.keys[variant]
        filename, content_type = OUTPUT_NAMES[variant]
        url = self.store.presigned_url(key, self.settings.storage.presign_seconds, f"{video_id}-{filename}")
        if url is not None:
            return RedirectResponse(url, status_code=307)
        return Response(await asyncio.to_thread(self.store.get, key), media_type=content_type)

    @app.delete("/v1/videos/{video_id}", summary="Cancel the job and erase its inputs and outputs")
    async def delete_video(self, video_id: str, request: Request) -> JSONResponse:
        principal = self._admit(request)
        manifest = await asyncio.to_thread(self.jobs.get, video_id, principal.tenant)
        await self.runner.cancel(video_id)
        await asyncio.to_thread(self.jobs.delete, video_id)
        if manifest.status not in TERMINAL_STATUSES:
            metrics.record_job_status("canceled")
        return JSONResponse({"id": video_id, "object": "video.deleted", "deleted": True})

    @app.post(
        "/v1/verify",
        summary="Read the C2PA manifest and the watermarked job id of an MP4 or JPEG (the raw file as body)",
    )
    async def verify(self, request: Request) -> JSONResponse:
        self._admit(request)
        limit = self.settings.limits.max_request_bytes
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise PayloadTooLarge(f"the file is larger than {limit} bytes")
        try:
            mime = sniff_mime(bytes(body))
        except ValueError:
            raise UnsupportedMedia("send an MP4 video or a JPEG image as the request body") from None
        anchors = self.settings.provenance.c2pa.trust_anchors
        try:
            report = await asyncio.to_thread(verify_media, bytes(body), mime, anchors)
        except Exception as exc:  # a truncated or damaged file: the client's problem, not a crash
            raise UnsupportedMedia(f"the file could not be read as {mime}: {type(exc).__name__}") from None
        return JSONResponse(report.model_dump(mode="json"))

    def _admit(self, request: Request) -> Principal:
        """The caller's tenant and limits; raises Unauthorized (401) or RateLimited (429)."""
        return self.access.admit(request.headers.get("authorization"), request.headers.get("x-api-key"))

    async def _parse_create(self, request: Request) -> ParsedCreate:
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.settings.limits.max_request_bytes:
            raise PayloadTooLarge(
                f"the request body is {length} bytes; the limit is {self.settings.limits.max_request_bytes}"
            )
        if not request.headers.get("content-type", "").startswith("multipart/form-data"):
            raise InvalidRequest("the request body must be multipart/form-data with subject_a and subject_b")
        try:
            form = await request.form(max_files=2, max_fields=len(_TEXT_FIELDS) + 2)
        except Exception as exc:  # malformed multipart, too many parts
            raise InvalidRequest(f"the multipart body could not be parsed: {exc}") from None
        errors: list[dict[str, Any]] = []
        for name in form:
            if name not in _TEXT_FIELDS and name not in _FILE_FIELDS:
                errors.append({"field": name, "message": "unknown field"})
            elif len(form.getlist(name)) > 1:
                errors.append({"field": name, "message": "given more than once"})
        photos: dict[str, bytes] = {}
        for subject, name in zip(SUBJECTS, _FILE_FIELDS, strict=True):
            upload = form.get(name)
            if not isinstance(upload, UploadFile):
                errors.append({"field": name, "message": "a photo file is required"})
                continue
            photos[subject] = await upload.read(self.settings.limits.max_upload_bytes + 1)
        text: dict[str, str] = {}
        for name in _TEXT_FIELDS:
            value = form.get(name)
            if isinstance(value, str):
                text[name] = value
            elif value is not None:
                errors.append({"field": name, "message": "must be a plain form field, not a file"})
        params = _validated(VideoParams, {n: text[n] for n in _PARAM_FIELDS if n in text}, errors)
        # A missing consent field counts as "not consented" (refused as consent_required, naming the
        # person); a malformed one is invalid_request.
        consent = {
            s: {"consented": text.get(name, "false"), "reference": text.get(f"consent_ref_{s}")}
            for name, s in _CONSENT_FIELDS.items()
        }
        attestation = _validated(Attestation, consent, errors, rename=_CONSENT_FIELD_OF)
        webhook_url = text.get(_WEBHOOK_FIELD) or None
        if errors or params is None:
            fields = ", ".join(sorted({e["field"] for e in errors}))
            raise InvalidRequest(f"invalid fields: {fields}", None, errors)
        return params, attestation, photos, webhook_url
