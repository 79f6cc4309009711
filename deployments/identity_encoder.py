"""IdentityEncoder deployment (fractional GPU; CPU in the local profile): adapter over IdentityStage.

Its return value (aligned crops, embeddings) goes to the generator through the Ray object store.
"""

from __future__ import annotations

from deployments import metrics
from deployments.logs import setup_replica_logging
from kiss_core.generation.conditioning import Conditioning
from kiss_core.jobs.stages import IdentityStage
from kiss_core.schemas import StageRequest
from kiss_core.settings import Settings
from kiss_core.storage import open_store
from kiss_core.tracing import setup_tracing


class IdentityEncoderDeployment:
    def __init__(self, settings: Settings):
        setup_tracing(f"{settings.tracing.service_name}.identity_encoder")
        setup_replica_logging()  # project logs in the replica log; client errors one line
        self.stage = IdentityStage(settings, open_store(settings.storage))
        metrics.record_gpu_memory()  # the weights just loaded

    def condition(self, request: StageRequest) -> Conditioning:
        before = self._cache_counts()
        try:
            with metrics.timed_stage("identity"):
                return self.stage(request)
        finally:
            metrics.record_gpu_memory()
            after = self._cache_counts()
            metrics.record_prompt_cache(True, after[0] - before[0])
            metrics.record_prompt_cache(False, after[1] - before[1])

    def check_health(self) -> None:
        """Serve calls this every health_check_period_s; raising makes it replace the replica."""
        self.stage.check_health()

    def _cache_counts(self) -> tuple[int, int]:
        """(hits, misses) of the prompt-embedding caches of the loaded diffusion conditioners."""
        conditioners = self.stage.encoder.conditioners.values()
        return sum(c.hits for c in conditioners), sum(c.misses for c in conditioners)
