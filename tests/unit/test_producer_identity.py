"""The producer measures identity frame by frame beside the render: the same report as afterwards.

`VideoProducer` hands each checked frame, once marked, to its worker thread (`frame_identity`) while
the rest of the video renders, and puts the frames' results together at the end. Run after the
render on the same marked frames with the same HOG detections, `identity_report` must give the same
numbers. A romantic preview of synthetic subjects 2 and 3 (composites, nobody real), whose hold the
report only measures by looking for each person alone.
"""

from __future__ import annotations

import tempfile
from typing import Any, ClassVar

import pytest

from kiss_core.generation.producer import VideoProducer, quality_sample
from kiss_core.generation.quality import identity_report
from kiss_core.scene.choreography import face_centers
from kiss_core.schemas import QualityReport, VideoParams
from kiss_core.settings import Settings
from tests.support.studio import SyntheticStudio


class _KeepingProducer(VideoProducer):
    """Keeps what `_measure` was given, to measure it again afterwards."""

    kept: ClassVar[dict[str, Any]] = {}

    def _measure(self, params, scene, rendered, conditioning, faces, identities):  # type: ignore[no-untyped-def]
        _KeepingProducer.kept = {
            "scene": scene,
            "rendered": rendered,
            "conditioning": conditioning,
            "faces": faces,
        }
        return super()._measure(params, scene, rendered, conditioning, faces, identities)


def test_the_identity_measured_beside_the_render_is_the_report_run_afterwards() -> None:
    settings = Settings()
    studio = SyntheticStudio(settings, tempfile.mkdtemp(prefix="producer_identity_"))
    studio.producer = _KeepingProducer(settings, studio.store, studio.analyzer)
    # One fixed job id: the watermark it carries moves the frames a little (see test_quality_thresholds).
    result = studio.produce(
        studio.pair(2, 3), VideoParams(style="romantic"), "video_5eed0f0a1b2c3d4e5f607182"
    )
    kept = _KeepingProducer.kept
    plan, sampled, faces = kept["scene"].plan, kept["rendered"].sampled, kept["faces"]
    indices = sorted(quality_sample(plan.frame_count, plan.contact_frame, settings.generator.quality_frames))
    after = identity_report(
        [sampled[i] for i in indices],
        {s: c[indices] for s, c in face_centers(plan).items()},
        {s: c.embedding for s, c in kept["conditioning"].subjects.items()},
        studio.analyzer,
        0.92,
        detections=[faces.detected(i, sampled[i]) for i in indices],
        planned_landmarks={s: t.landmarks[indices] for s, t in plan.tracks.items()},
    )
    beside: QualityReport = result.quality
    assert (
        beside.both_found == after.both_found and beside.both_found is not None and beside.both_found >= 0.8
    )
    for measured, again in zip(beside.subjects, after.subjects, strict=True):
        assert measured.frames_found == again.frames_found
        assert measured.similarity_min == pytest.approx(again.similarity_min, abs=1e-6)
        assert measured.similarity_mean == pytest.approx(again.similarity_mean, abs=1e-6)
    assert result.timings["identity"] > 0 and "identity_wait" in result.timings
