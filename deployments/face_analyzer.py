"""FaceAnalyzer deployment (CPU replicas): a thin adapter over kiss_core.jobs.stages.AnalysisStage."""

from __future__ import annotations

from deployments import metrics
from deployments.logs import setup_replica_logging
from kiss_core.jobs.stages import AnalysisStage
from kiss_core.schemas import SubjectAnalysis
from kiss_core.settings import Settings
from kiss_core.tracing import setup_tracing


class FaceAnalyzerDeployment:
    def __init__(self, settings: Settings):
        setup_tracing(f"{settings.tracing.service_name}.face_analyzer")
        setup_replica_logging()  # project logs in the replica log; client errors one line
        self.stage = AnalysisStage(settings)

    def analyze(self, image: bytes, subject: str, trace: dict[str, str]) -> SubjectAnalysis:
        with metrics.timed_stage("face_analysis"):
            return self.stage(image, subject, trace)

    def check_health(self) -> None:
        self.stage.check_health()
