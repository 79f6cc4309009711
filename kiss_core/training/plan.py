"""TrainPlan: what every training worker is handed (small and picklable: it travels in Ray's loop config)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kiss_core.generation.backends.weights import DiffusionBackend
from kiss_core.training.config import TrainConfig
from kiss_core.training.precompute import PrecomputedSet


@dataclass(frozen=True)
class TrainPlan:
    """What every worker gets (picklable, small): the config, the base model, where the data is."""

    config: TrainConfig
    base: DiffusionBackend
    base_dir: Path
    data: PrecomputedSet
    log_dir: Path | None = None  # TensorBoard events and validation renders (rank 0)
