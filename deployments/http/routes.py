"""The HTTP endpoints: each parses its request (deployments.http.forms), asks who the caller is, calls
the VideoService and shapes the answer. Errors become problem+json (deployments.http.problems).

The routes are methods so that Serve can bind them to the Ingress replica (`serve.ingress(app)` in
deployments.ingress); the replica sets `service`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from deployments.http.forms import (
    analysis_request_schema,
    create_request_schema,
    page_params,
    parse_analysis_form,
    parse_report,
    parse_video_form,
    read_body,
    trace_headers,
)
from deployments.http.problems import install_problem_handlers
from deployments.http.service import VideoService
from kiss_core.jobs.access import Principal
from kiss_core.jobs.reports import ReportRequest

if TYPE_CHECKING:
    from deployments.http.events import LiveJobs

app = FastAPI(
    title="kissgen",
    version="0.1.0",
    description=(
        "Photos of two consenting adults in, a short kiss video out. Errors are RFC 9457 problem+json."
    ),
)
install_problem_handlers(app)


class VideoRoutes:
    """The API of /v1/videos, /v1/analyses, /v1/capabilities, /v1/reports and /v1/verify over a
    VideoService."""

    service: VideoService
    live: LiveJobs  # queue positions, ETAs and event streams (deployments.http.events)

    @app.post(
        "/v1/videos",
        status_code=202,
        openapi_extra=create_request_schema(),
        summary="Create a kiss video from two photos",
        responses={202: {"description": "Accepted; poll the Location."}},
    )
    async def create_video(self, request: Request) -> JSONResponse:
        self.service.start_maintenance()
        caller = self._caller(request)
        key = request.headers.get("idempotency-key")
        if key is None:  # refuse before the body is read (photos are large); a keyed retry may be a replay
            self.service.admission.check_capacity()
        form = await parse_video_form(request, self.service.limits)
        manifest, replayed = await self.service.create(caller, form, trace_headers(request), key)
        # Under a route prefix (Serve sets it as the ASGI root_path) the job lives below it.
        headers = {"Location": f"{request.scope.get('root_path', '')}/v1/videos/{manifest.id}"}
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(manifest.public(), status_code=202, headers=headers)

    @app.get("/v1/videos", summary="Your video jobs, newest first (paginated)")
    async def list_videos(self, request: Request) -> JSONResponse:
        caller = self._caller(request)
        limit, cursor = page_params(request.query_params)
        page = await self.service.list_jobs(caller, limit, cursor)
        page["data"] = await self.live.views(page["data"])
        return JSONResponse(page)

    @app.get("/v1/videos/{video_id}", summary="The state of a video job")
    async def get_video(self, video_id: str, request: Request) -> JSONResponse:
        manifest = await self.service.job(self._caller(request), video_id)
        return JSONResponse(await self.live.view(manifest))

    @app.get("/v1/videos/{video_id}/content", summary="Download the video, its thumbnail or the still")
    async def get_content(self, video_id: str, request: Request, variant: str = "video") -> Response:
        content = await self.service.content(self._caller(request), video_id, variant)
        if content.url is not None:
            return RedirectResponse(content.url, status_code=307)
        return Response(content.data, media_type=content.media_type)

    @app.post(
        "/v1/videos/{video_id}/cancel",
        summary="Stop a queued or running job; keep its record (canceled), erase its photos and output",
        responses={409: {"description": "The job already finished (job_finished)."}},
    )
    async def cancel_video(self, video_id: str, request: Request) -> JSONResponse:
        manifest = await self.service.cancel(self._caller(request), video_id)
        return JSONResponse(manifest.public())

    @app.delete("/v1/videos/{video_id}", summary="Cancel the job and erase its inputs and outputs")
    async def delete_video(self, video_id: str, request: Request) -> JSONResponse:
        await self.service.delete(self._caller(request), video_id)
        return JSONResponse({"id": video_id, "object": "video.deleted", "deleted": True})

    @app.post(
        "/v1/verify",
        summary="Read the C2PA manifest and the watermarked job id of an MP4 or JPEG (the raw file as body)",
    )
    async def verify(self, request: Request) -> JSONResponse:
        self._caller(request)
        body = await read_body(request, self.service.limits.max_request_bytes)
        return JSONResponse(await self.service.verify(body))

    @app.post(
        "/v1/analyses",
        openapi_extra=analysis_request_schema(),
        summary="Check one photo as a submission would (face, age gate, content filter); stores nothing",
    )
    async def analyze_photo(self, request: Request) -> JSONResponse:
        caller = self._caller(request)
        self.service.admission.check_capacity()
        photo, subject = await parse_analysis_form(request, self.service.limits)
        return JSONResponse(await self.service.analyze(caller, photo, subject, trace_headers(request)))

    @app.get("/v1/capabilities", summary="Backends, LoRAs, choices and limits of the service (no key needed)")
    async def capabilities(self) -> JSONResponse:
        return JSONResponse(self.service.capabilities())

    @app.post(
        "/v1/reports",
        status_code=201,
        summary="Report a video or a file (abuse, no consent, a minor...); kept append-only for operators",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ReportRequest.model_json_schema()}},
            }
        },
    )
    async def create_report(self, request: Request) -> JSONResponse:
        caller = self._caller(request)
        report = await self.service.report(caller, await parse_report(request))
        received_at = report.model_dump(mode="json")["received_at"]
        body = {"object": "report", "id": report.id, "received_at": received_at}
        return JSONResponse(body, status_code=201)

    def _caller(self, request: Request) -> Principal:
        return self.service.authorize(request.headers.get("authorization"), request.headers.get("x-api-key"))
