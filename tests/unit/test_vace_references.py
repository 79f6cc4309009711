"""Wan VACE with several photos of a subject: every photo's aligned crop is a reference image, and the
identity is the mean of their embeddings. Tiny random-weight pipelines on CPU (tests.support.tiny_wan);
the subjects are synthetic, another photo of one is the same synthetic face mirrored."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiss_core.faces.analysis import DlibFaceAnalyzer
from kiss_core.faces.subject_photos import mean_embedding
from kiss_core.generation.conditioning import IdentityEncoder
from kiss_core.jobs.stages import load_backends, load_conditioners
from kiss_core.scene.choreography import plan_kiss
from kiss_core.schemas import VideoParams
from kiss_core.settings import Settings
from tests.support.photo_variants import mirrored, rotated
from tests.support.studio import SyntheticStudio
from tests.support.tiny_wan import ForwardCounter, build_model_root

PARAMS = VideoParams(backend="wan-vace", style="peck", seconds=1.5, fps=8, size="160x128")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    root = build_model_root(tmp_path_factory.mktemp("models"))
    return Settings(
        storage={"backend": "local", "local_root": str(tmp_path_factory.mktemp("store"))},
        generator={"model_root": str(root), "steps": 2, "fast_steps": 2, "enabled": ["wan-vace"]},
    )


@pytest.mark.slow  # builds and loads the tiny Wan model root, then denoises (~35 s on a busy CPU)
def test_vace_gets_every_crop_of_each_person_as_a_reference(settings: Settings) -> None:
    studio = SyntheticStudio(settings, str(settings.storage.local_root))
    pair = studio.pair(0, 1)
    analyzer = DlibFaceAnalyzer(settings.faces)
    others = [mirrored(pair.photos["a"]), rotated(pair.photos["a"])]
    references = {"a": [(photo, analyzer.analyze(photo, "a")) for photo in others]}
    encoder = IdentityEncoder(settings.faces, settings.generator, load_conditioners(settings))
    conditioning = encoder.encode(pair.photos, pair.analyses, PARAMS, references)

    a, b = conditioning.subjects["a"], conditioning.subjects["b"]
    assert len(a.crops) == 3 and len(b.crops) == 1
    assert all(crop.shape == a.crop.shape for crop in a.crops)
    embeddings = [pair.analyses["a"].embedding, *(analysis.embedding for _, analysis in references["a"])]
    np.testing.assert_allclose(a.embedding, mean_embedding(embeddings), atol=1e-6)
    np.testing.assert_allclose(b.embedding, mean_embedding([pair.analyses["b"].embedding]), atol=1e-6)

    backend: Any = load_backends(settings)["wan-vace"]
    plan = plan_kiss(pair.analyses, PARAMS)
    inputs = backend.inputs(plan, pair.photos, pair.analyses, conditioning, 13)
    assert len(inputs["reference_images"]) == 4, "a's three crops, then b's one"
    np.testing.assert_array_equal(np.asarray(inputs["reference_images"][1]), a.crops[1])
    with ForwardCounter(backend.pipe.transformer) as forwards:
        frames = list(backend.frames(plan, pair.photos, pair.analyses, conditioning, PARAMS, lambda _: None))
    assert len(frames) == 12 and forwards.calls > 0


def test_a_subject_with_one_photo_keeps_its_own_embedding(tmp_path: Path) -> None:
    settings = Settings()
    pair = SyntheticStudio(settings, str(tmp_path)).pair(2, 3)
    conditioning = IdentityEncoder(settings.faces).encode(pair.photos, pair.analyses)
    for s in "ab":
        expected = np.asarray(pair.analyses[s].embedding, dtype=np.float32)
        unit = expected / np.linalg.norm(expected)
        np.testing.assert_allclose(conditioning.subjects[s].embedding, unit, atol=1e-6)
        assert conditioning.subjects[s].reference_crops == ()
