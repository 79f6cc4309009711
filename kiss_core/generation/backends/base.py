"""The contract every generation backend meets (see kiss_core.generation.backends)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import numpy as np

from kiss_core.generation.conditioning import Conditioning
from kiss_core.scene.choreography import KissPlan
from kiss_core.schemas import SubjectAnalysis, VideoParams

ShareDone = Callable[[float], None]
PreviewSink = Callable[[np.ndarray], None]  # a small uint8 RGB image of the frame being made


class StepProgress:
    """A ShareDone that may also take low-resolution previews of the frame being made (what a diffusion
    backend projects from its latent every few steps; see kiss_core.generation.latent_preview)."""

    def __init__(self, share: ShareDone, preview: PreviewSink | None = None):
        self._share = share
        self._preview = preview

    def __call__(self, share: float) -> None:
        self._share(share)

    @property
    def wants_preview(self) -> bool:
        return self._preview is not None

    def preview(self, rgb: np.ndarray) -> None:
        if self._preview is not None:
            self._preview(rgb)


def preview_sink(progress: ShareDone) -> PreviewSink | None:
    """Where a backend sends its previews, if whoever reports progress wants them."""
    return progress.preview if isinstance(progress, StepProgress) and progress.wants_preview else None


class FrameSource(Protocol):
    @property
    def name(self) -> str:
        """The backend's name ("preview", "wan-i2v", ...)."""
        ...

    def frames(
        self,
        plan: KissPlan,
        photos: Mapping[str, np.ndarray],
        analyses: Mapping[str, SubjectAnalysis],
        conditioning: Conditioning,
        params: VideoParams,
        progress: ShareDone,
    ) -> Iterator[np.ndarray]: ...

    def check_health(self) -> None:
        """Raise if this backend can no longer make frames (a dead device, a broken model)."""
        ...
