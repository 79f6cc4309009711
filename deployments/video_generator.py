"""VideoGenerator deployment (one full GPU, one video at a time; the preview backend runs on CPU).

Adapter over GenerationStage: renders, encodes, checks, stores; returns object keys and the report.
"""

from __future__ import annotations

from deployments import metrics
from deployments.logs import setup_replica_logging
from kiss_core.generation.conditioning import Conditioning
from kiss_core.jobs.stages import GenerationStage
from kiss_core.schemas import JobResult, StageRequest
from kiss_core.settings import Settings
from kiss_core.storage import open_store
from kiss_core.tracing import setup_tracing


class VideoGeneratorDeployment:
    def __init__(self, settings: Settings):
        setup_tracing(f"{settings.tracing.service_name}.video_generator")
        setup_replica_logging()  # project logs in the replica log; client errors one line
        self.stage = GenerationStage(settings, open_store(settings.storage))
        metrics.record_gpu_memory()  # the weights just loaded

    def generate(self, request: StageRequest, conditioning: Conditioning) -> JobResult:
        try:
            with metrics.timed_stage("generation"):
                result = self.stage(request, conditioning)
        finally:
            metrics.record_gpu_memory()
        metrics.observe_stages(result.timings)
        return result

    def check_health(self) -> None:
        """Serve calls this every health_check_period_s; raising makes it replace the replica."""
        self.stage.check_health()
