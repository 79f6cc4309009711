"""Preview jobs of synthetic pairs in one process: the evidence behind the quality thresholds.

The threshold tests, the contact sheet and the render benchmark all need the same thing: two
synthetic subjects (composites, never a real person), analysed and encoded as the service would,
then the producer's real work on them. No Ray, no HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kiss_core.faces.analysis import DlibFaceAnalyzer
from kiss_core.faces.synthetic import synthetic_subject_png
from kiss_core.generation.conditioning import Conditioning, IdentityEncoder
from kiss_core.generation.producer import VideoProducer
from kiss_core.keys import new_job_id
from kiss_core.media.images import decode_image
from kiss_core.schemas import JobResult, StageRequest, SubjectAnalysis, VideoParams
from kiss_core.settings import Settings
from kiss_core.storage import LocalDirStore

# Pairs of synthetic subject indices: every subject appears, on both sides.
PAIRS: tuple[tuple[int, int], ...] = ((0, 1), (2, 3), (1, 2), (3, 0))


@dataclass(frozen=True)
class SyntheticPair:
    """Two synthetic subjects as the generator receives them."""

    name: str
    pngs: dict[str, bytes]
    photos: dict[str, np.ndarray]
    analyses: dict[str, SubjectAnalysis]
    conditioning: Conditioning


class SyntheticStudio:
    """Prepares synthetic pairs and runs the preview producer on them against a local store."""

    def __init__(self, settings: Settings, root: str):
        self.settings = settings
        self.store = LocalDirStore(root)
        self.analyzer = DlibFaceAnalyzer(settings.faces)
        self.encoder = IdentityEncoder(settings.faces)
        self.producer = VideoProducer(settings, self.store, self.analyzer)

    def pair(self, a: int, b: int) -> SyntheticPair:
        pngs = {"a": synthetic_subject_png(a), "b": synthetic_subject_png(b)}
        photos = {s: decode_image(data, self.settings.limits, s) for s, data in pngs.items()}
        analyses = {s: self.analyzer.analyze(photos[s], s) for s in photos}
        return SyntheticPair(
            name=f"{a}+{b}",
            pngs=pngs,
            photos=photos,
            analyses=analyses,
            conditioning=self.encoder.encode(photos, analyses),
        )

    def produce(self, pair: SyntheticPair, params: VideoParams, job_id: str | None = None) -> JobResult:
        """The producer's whole job (lighting, plan, render, encode, report, store) for this pair.

        `job_id` fixes the watermark's payload, so the frames (and every number measured on them) are
        the same on every run; by default a new id, as a job gets."""
        job_id = job_id or new_job_id()
        keys = {s: f"inputs/{job_id}/{s}.png" for s in pair.pngs}
        for subject, key in keys.items():
            self.store.put(key, pair.pngs[subject], "image/png")
        request = StageRequest(
            job_id=job_id, params=params, input_keys=keys, analyses=[pair.analyses["a"], pair.analyses["b"]]
        )
        return self.producer.produce(request, pair.conditioning)
