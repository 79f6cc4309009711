"""The in-frame marks of one job, in the one order that works: the watermark, then the visible label.

The label's patch is drawn over the watermark's cells, not the other way round (the label must stay
legible, the watermark is read by majority over the rest of the frame). Built once per job: the
watermark embedder adapts to the job's frames in order.
"""

from __future__ import annotations

import numpy as np

from kiss_core.generation.provenance.label import FrameLabeler
from kiss_core.generation.provenance.watermark import WatermarkEmbedder
from kiss_core.settings import ProvenanceSettings


class FrameMarks:
    """Applies the enabled marks of `settings` to each frame of job `job_id`, in place."""

    def __init__(self, settings: ProvenanceSettings, job_id: str, width: int, height: int):
        self.labeler = FrameLabeler(settings.label, width, height) if settings.label.enabled else None
        self.watermark = (
            WatermarkEmbedder(job_id, settings.watermark.strength) if settings.watermark.enabled else None
        )

    def apply(self, frame: np.ndarray) -> None:
        if self.watermark is not None:
            self.watermark.apply(frame)
        if self.labeler is not None:
            self.labeler.apply(frame)
