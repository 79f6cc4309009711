"""The stages a job runs through, as admission and the runner see them: not where they run.

The Serve graph implements them with deployment handles (responses passed along unresolved), the
in-process pipeline (kiss_core.jobs.stages.InProcessStages) with plain calls.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

from kiss_core.schemas import JobResult, StageRequest, SubjectAnalysis


class Stages(Protocol):
    """Where the work happens. `condition` returns an opaque handle that `generate` consumes.

    `analyze` runs before a job exists (admission), so it takes one photo, not a StageRequest.
    """

    def analyze(self, image: bytes, subject: str, trace: dict[str, str]) -> Awaitable[SubjectAnalysis]: ...

    def condition(self, request: StageRequest) -> Any: ...

    def generate(self, request: StageRequest, conditioning: Any) -> Awaitable[JobResult]: ...
