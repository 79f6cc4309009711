"""The preview compositor as a backend: no weights, CPU, always there."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

from kiss_core.generation.backends.base import ShareDone
from kiss_core.generation.conditioning import Conditioning
from kiss_core.scene.camera import apply_camera
from kiss_core.scene.choreography import KissPlan
from kiss_core.scene.render import PreviewCompositor
from kiss_core.schemas import SubjectAnalysis, VideoParams


class PreviewFrames:
    """The preview compositor as a backend: the photos animated along the plan."""

    name = "preview"

    def __init__(self, compositor: PreviewCompositor | None = None):
        self.compositor = compositor or PreviewCompositor()

    def frames(
        self,
        plan: KissPlan,
        photos: Mapping[str, np.ndarray],
        analyses: Mapping[str, SubjectAnalysis],
        conditioning: Conditioning,
        params: VideoParams,
        progress: ShareDone,
    ) -> Iterator[np.ndarray]:
        step = max(1, plan.frame_count // 10)
        # The compositor draws the scene; the camera (if the plan moves it) crops and resizes each
        # finished frame, so the plan's frame-space landmarks and the pixels agree.
        camera = plan.camera
        for index, frame in enumerate(self.compositor.render(plan.scene(), photos, analyses)):
            if index % step == 0:
                progress(index / plan.frame_count)
            yield frame if camera is None else apply_camera(frame, camera[index])

    def check_health(self) -> None:
        """Nothing to lose: CPU code without weights (the compositor's inputs are checked per job)."""
