"""Generation backends: where a job's frames come from. The producer does everything around them.

A backend is a `FrameSource`: given the plan (motion, first-frame layout, pose tracks), the
lighting-harmonised photos, their analyses and the conditioning the IdentityEncoder computed, it
yields the clip's frames (H, W, 3) uint8 RGB, one per plan frame, and calls `progress` with its
share done (0..1) as it goes. Labelling, encoding, the quality report and storage are the
producer's, so every backend is measured and marked the same way.

`preview` (kiss_core.render, CPU, no weights) is always there; diffusion backends register here
when their weights are configured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import numpy as np

from kiss_core.choreography import KissPlan
from kiss_core.identity import Conditioning
from kiss_core.render import PreviewCompositor
from kiss_core.schemas import SubjectAnalysis, VideoParams

ShareDone = Callable[[float], None]


class FrameSource(Protocol):
    name: str

    def frames(
        self,
        plan: KissPlan,
        photos: Mapping[str, np.ndarray],
        analyses: Mapping[str, SubjectAnalysis],
        conditioning: Conditioning,
        params: VideoParams,
        progress: ShareDone,
    ) -> Iterator[np.ndarray]: ...


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
        for index, frame in enumerate(self.compositor.render(plan, photos, analyses)):
            if index % step == 0:
                progress(index / plan.frame_count)
            yield frame
