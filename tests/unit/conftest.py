"""Fixtures shared by the tiny-Wan test modules. Each module provides its own `settings` (the model root
and generator settings it tests); these build the synthetic pair and the encoder from it."""

from __future__ import annotations

import pytest

from kiss_core.generation.conditioning import IdentityEncoder
from kiss_core.jobs.stages import load_conditioners
from kiss_core.settings import Settings
from tests.support.studio import SyntheticPair, SyntheticStudio


@pytest.fixture(scope="module")
def pair(settings: Settings) -> SyntheticPair:
    """Synthetic subjects 0 and 1, analysed and identity-encoded as the service would."""
    return SyntheticStudio(settings, str(settings.storage.local_root)).pair(0, 1)


@pytest.fixture(scope="module")
def encoder(settings: Settings) -> IdentityEncoder:
    """The IdentityEncoder with the module's diffusion conditioners (text and image encoders)."""
    return IdentityEncoder(settings.faces, settings.generator, load_conditioners(settings))


@pytest.fixture(scope="module")
def analyzer():
    """dlib's face analyzer with the default settings, loaded once per module."""
    from kiss_core.faces.analysis import DlibFaceAnalyzer
    from kiss_core.settings import FaceSettings

    return DlibFaceAnalyzer(FaceSettings())
