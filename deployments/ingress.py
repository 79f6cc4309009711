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

from ray import serve
from ray.serve.handle import DeploymentHandle, DeploymentResponse

from deployments.http.routes import VideoRoutes, app
from deployments.http.service import VideoService
from kiss_core.schemas import StageRequest
from kiss_core.settings import Settings
from kiss_core.tracing import setup_tracing

log = logging.getLogger("kissgen.ingress")


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


@serve.ingress(app)
class VideoAPI(VideoRoutes):
    def __init__(
        self,
        analyzer: DeploymentHandle,
        identity: DeploymentHandle,
        generator: DeploymentHandle,
        settings: Settings,
    ):
        setup_tracing(f"{settings.tracing.service_name}.ingress")
        self.service = VideoService(settings, ServeStages(analyzer, identity, generator))
        with contextlib.suppress(RuntimeError):  # Serve builds replicas inside their event loop
            self.service.start_maintenance()

    async def __del__(self) -> None:
        """Graceful shutdown (scale-down, redeploy, node drain): Serve calls this once the replica's
        requests have drained. Jobs run in the background, not as requests, so they would die with the
        process and wait for their lease to lapse; instead they are handed back at once."""
        handed = await self.service.hand_back()
        if handed:
            log.info("graceful shutdown: handed back jobs %s", handed)
