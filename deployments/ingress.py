"""Ingress deployment (CPU): the HTTP API. Validates, persists the job, answers 202, runs the job.

The endpoints live in deployments.http (routes, form parsing, problem+json, the VideoService they
call); this module adds what only a Serve replica has: the handles of the other deployments, and its
lifecycle (background recovery from the start, hand-back of running jobs at graceful shutdown).

Every endpoint first asks `AccessControl.authorize` who the caller is (API key -> tenant, per-key rate
limit); everything after that is scoped to the caller's tenant.

It holds deployment handles and passes their responses along unresolved: conditioning tensors go
from the IdentityEncoder to the VideoGenerator through the Ray object store, never through here.
"""

import contextlib
import logging
from collections.abc import Mapping
from typing import cast

from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from deployments.http.events import EventRoutes, LiveJobs
from deployments.http.page import PageRoutes
from deployments.http.routes import VideoRoutes, app
from deployments.http.service import VideoService, loaded_backends
from deployments.logs import setup_replica_logging
from deployments.placement import PlacementWatch, serve_status_reader
from kiss_core.jobs.heap import HeapTrimmer
from kiss_core.schemas import JobResult, StageRequest, SubjectAnalysis
from kiss_core.settings import Settings
from kiss_core.tracing import setup_tracing

log = logging.getLogger("kissgen.ingress")


class ServeStages:
    """The job's stages as deployment handles. The conditioning response goes to the generator unresolved;
    every wait is guarded, so a stage that cannot be placed fails the job instead of hanging it.

    `generators` maps each diffusion backend to the generator deployment that holds it (one backend per
    generator replica); the default generator also runs the preview and any backend not listed.
    """

    def __init__(
        self,
        analyzer: DeploymentHandle,
        identity: DeploymentHandle,
        generators: Mapping[str, DeploymentHandle],
        default_backend: str,
        watch: PlacementWatch,
    ):
        self.analyzer = analyzer
        self.identity = identity
        self.generators = dict(generators)
        self.default_backend = default_backend
        self.watch = watch

    async def analyze(self, image: bytes, subject: str, trace: dict[str, str]) -> SubjectAnalysis:
        response = self.analyzer.analyze.remote(image, subject, trace)
        return await self.watch.guard((self.analyzer.deployment_name,), response)

    def condition(self, request: StageRequest) -> DeploymentResponse:
        return cast(DeploymentResponse, self.identity.condition.remote(request))  # not a streaming call

    async def generate(self, request: StageRequest, conditioning: DeploymentResponse) -> JobResult:
        generator = self.generator_for(request.params.backend)
        response = generator.generate.remote(request, conditioning)
        needs = (self.identity.deployment_name, generator.deployment_name)
        return await self.watch.guard(needs, response)

    def generator_for(self, backend: str | None) -> DeploymentHandle:
        """The replica set that holds `backend` (the request's, else the default one)."""
        chosen = backend or self.default_backend
        return self.generators.get(chosen) or self.generators[self.default_backend]


@serve.ingress(app)
class VideoAPI(VideoRoutes, PageRoutes, EventRoutes):
    def __init__(
        self,
        analyzer: DeploymentHandle,
        identity: DeploymentHandle,
        generators: dict[str, DeploymentHandle],
        settings: Settings,
    ):
        setup_tracing(f"{settings.tracing.service_name}.ingress")
        setup_replica_logging()  # project logs in the replica log; client errors one line
        app_name = serve.get_replica_context().app_name
        self.watch = PlacementWatch(serve_status_reader(app_name), settings.jobs.placement_timeout_s)
        default = settings.generator.backend if settings.generator.backend in generators else "preview"
        stages = ServeStages(analyzer, identity, generators, default, self.watch)
        self.service = VideoService(settings, stages)
        self.service.backends = loaded_backends(settings, generators)  # what GET /v1/capabilities lists
        self.live = LiveJobs(
            settings.events,
            self.service.jobs,
            default,
            slots=self._generator_slots,
            group=lambda kind: stages.generator_for(kind.partition(":")[0]).deployment_name,
        )
        self.service.runner.on_complete.append(self.live.learn)
        # What glibc keeps free after each job goes back to the kernel (kiss_core.jobs.heap, measured there).
        self.service.runner.on_complete.append(HeapTrimmer())
        with contextlib.suppress(RuntimeError):  # Serve builds replicas inside their event loop
            self.service.start_maintenance()

    def _generator_slots(self, deployment: str) -> int:
        """Videos a generator deployment runs at once: its running replicas (one video each) as the
        placement watch last read them; 1 before it has read any."""
        state = self.watch.states.get(deployment)
        return max(1, state.running) if state is not None else 1

    @app.get("/v1/health", summary="Whether every stage has a running replica (200) or not (503)")
    async def health(self) -> JSONResponse:
        """For load balancers and operators: a stage that cannot be placed shows here at once, with
        Serve's reason, while jobs that need it fail after jobs.placement_timeout_s."""
        states = await self.watch.refresh(max_age_s=0)
        deployments = {
            name: {"status": state.status, "running_replicas": state.running}
            | ({"message": state.reason} if state.running == 0 else {})
            for name, state in sorted(states.items())
        }
        healthy = all(state.running > 0 for state in states.values())
        body = {"status": "ok" if healthy else "degraded", "deployments": deployments}
        return JSONResponse(body, status_code=200 if healthy else 503)

    async def __del__(self) -> None:
        """Graceful shutdown (scale-down, redeploy, node drain): Serve calls this once the replica's
        requests have drained. Jobs run in the background, not as requests, so they would die with the
        process and wait for their lease to lapse; instead they are handed back at once."""
        handed = await self.service.hand_back()
        if handed:
            log.info("graceful shutdown: handed back jobs %s", handed)
