"""The curation tier: one corpus of synthetic-subject clips per session (built once, ~30 s on 2 cores)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.curation_corpus import Expected, build_corpus


@dataclass(frozen=True)
class Corpus:
    root: Path
    expected: dict[str, Expected]


@pytest.fixture(scope="session")
def curation_corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    root = tmp_path_factory.mktemp("curation") / "source"
    return Corpus(root, build_corpus(root))
