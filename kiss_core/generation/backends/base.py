"""The contract every generation backend meets (see kiss_core.generation.backends)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import numpy as np

from kiss_core.generation.conditioning import Conditioning
from kiss_core.scene.choreography import KissPlan
from kiss_core.schemas import SubjectAnalysis, VideoParams

ShareDone = Callable[[float], None]


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
