"""Every output of a real job is marked: label on every frame, the job id watermarked, signed C2PA.

The producer's whole job on two synthetic subjects (composites — nobody real), signed with a test
certificate made here, read back with verify_media (c2pa.Reader underneath) and after a re-encode at
a lower quality.
"""

from __future__ import annotations

import numpy as np
import pytest

from kiss_core.generation.provenance.label import FrameLabeler
from kiss_core.generation.provenance.verify import verify_media
from kiss_core.generation.provenance.watermark import read_video_watermark
from kiss_core.media.video import decode_mp4, encode_mp4
from kiss_core.schemas import JobResult, VideoParams
from kiss_core.settings import Settings
from tests.support.certs import SigningCertFiles, make_signing_cert
from tests.support.studio import SyntheticStudio

PARAMS = VideoParams(style="peck", seconds=2, fps=24, size="832x480")
TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory) -> SigningCertFiles:
    return make_signing_cert(tmp_path_factory.mktemp("c2pa"))


def _run(settings: Settings, root: str) -> tuple[SyntheticStudio, JobResult, str]:
    studio = SyntheticStudio(settings, root)
    result = studio.produce(studio.pair(0, 1), PARAMS)
    job_id = result.keys["video"].split("/")[1]
    return studio, result, job_id


@pytest.fixture(scope="module")
def marked(signing: SigningCertFiles, tmp_path_factory: pytest.TempPathFactory):
    c2pa = {
        "cert_chain": str(signing.chain),
        "private_key": str(signing.key),
        "trust_anchors": str(signing.ca),
    }
    settings = Settings(provenance={"c2pa": c2pa})
    return (*_run(settings, str(tmp_path_factory.mktemp("marked"))), settings)


def test_the_video_carries_a_trusted_manifest_and_its_job_id_in_the_pixels(marked) -> None:
    studio, result, job_id, settings = marked
    assert result.provenance.model_dump() == {"label": True, "watermark": True, "c2pa": True}
    video = studio.store.get(result.keys["video"])
    report = verify_media(video, trust_anchors=settings.provenance.c2pa.trust_anchors)
    assert report.ai_generated and report.c2pa.valid and report.c2pa.trusted
    assert report.c2pa.job_id == job_id and report.c2pa.digital_source_type == TRAINED
    assert report.c2pa.claim_generator == "kissgen" and "c2pa.created" in report.c2pa.actions
    watermark = report.watermark
    assert watermark is not None and watermark.job_id == job_id and watermark.frames_other == 0
    assert watermark.frames_matching == watermark.frames_checked > 0


@pytest.mark.parametrize("variant", ["image", "thumbnail"])
def test_the_stills_are_signed_too(marked, variant: str) -> None:
    studio, result, job_id, settings = marked
    report = verify_media(
        studio.store.get(result.keys[variant]), "image/jpeg", settings.provenance.c2pa.trust_anchors
    )
    assert report.c2pa.valid and report.c2pa.job_id == job_id and report.c2pa.digital_source_type == TRAINED


def test_the_watermark_survives_a_lower_quality_re_encode(marked) -> None:
    studio, result, job_id, _ = marked
    frames, _fps = decode_mp4(studio.store.get(result.keys["video"]))
    worse = encode_mp4(list(frames), PARAMS.fps, crf=35)  # what a sharing site might do
    reading = read_video_watermark(worse)
    assert reading.job_id == job_id and reading.frames_other == 0
    assert reading.frames_matching >= 0.9 * reading.frames_checked, reading


def test_the_label_is_on_every_frame_and_nowhere_else(marked, tmp_path) -> None:
    studio, result, _, settings = marked
    plain_settings = Settings(provenance={"label": {"enabled": False}, "watermark": {"enabled": False}})
    plain_studio, plain, _ = _run(plain_settings, str(tmp_path))
    assert plain.provenance.model_dump() == {"label": False, "watermark": False, "c2pa": False}
    frames, _ = decode_mp4(studio.store.get(result.keys["video"]))
    bare, _ = decode_mp4(plain_studio.store.get(plain.keys["video"]))
    x0, y0, x1, y1 = FrameLabeler(settings.provenance.label, PARAMS.width, PARAMS.height).box
    inside = np.zeros(frames.shape[1:3], bool)
    inside[y0:y1, x0:x1] = True
    diff = np.abs(frames.astype(np.int16) - bare.astype(np.int16)).mean(axis=-1)  # (T, H, W)
    assert len(frames) == len(bare) == PARAMS.frame_count
    assert (diff[:, inside].mean(axis=1) > 20).all(), "the mark is missing from some frame"
    assert diff[:, ~inside].mean() < 3, "outside the mark only the invisible watermark differs"
