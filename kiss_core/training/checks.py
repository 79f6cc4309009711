"""Bad input refused up front, before precompute or any Ray Train worker starts.

Each error names the bad value and what would fix it: a dataset with no kept segment, kept segments
without captions or shorter than the training clip, missing clip or track files, a base model
directory that is not the pipeline class `--base` names (or one training does not support), and a
rank below 1 (TrainConfig's own validator).
"""

from __future__ import annotations

import json
from pathlib import Path

from kiss_core.curation.manifest import MANIFEST_NAME, Segment, read_segments
from kiss_core.errors import KissError, ModelDirectoryError
from kiss_core.generation.backends.weights import (
    GENERATOR_PARTS,
    DiffusionBackend,
    ModelDirectory,
    validate_model_directory,
)
from kiss_core.training.config import TrainConfig


class TrainingInputError(KissError):
    """The dataset, the base model or the config cannot be trained on; the message says which and why."""


def check_dataset(root: Path, config: TrainConfig) -> list[Segment]:
    """The kept segments of the curated set at `root`, each with a caption, its files, and enough frames."""
    manifest = root / MANIFEST_NAME
    if not manifest.is_file():
        raise TrainingInputError(f"dataset {root}: {MANIFEST_NAME} is missing (run `kissgen curate` first)")
    try:
        segments = read_segments(root)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise TrainingInputError(f"dataset {root}: {MANIFEST_NAME} does not read: {exc}") from exc
    if not segments:
        raise TrainingInputError(
            f"dataset {root}: the manifest has no kept segment (kind == 'segment' and decision == 'kept');"
            " nothing to train on"
        )
    uncaptioned = [s.segment_id for s in segments if not s.caption.strip()]
    if uncaptioned:
        raise TrainingInputError(
            f"dataset {root}: {len(uncaptioned)} of {len(segments)} kept segments have no caption"
            f" (e.g. {uncaptioned[0][:16]}); the text conditioning needs one per clip"
        )
    for segment in segments:
        clip = segment.clip_path(root)
        if not clip.is_file():
            raise TrainingInputError(
                f"dataset {root}: clip {segment.clip} of segment {segment.segment_id[:16]} is missing"
            )
        tracks = segment.tracks_path(root)
        if tracks is not None and not tracks.is_file():
            raise TrainingInputError(
                f"dataset {root}: tracks {segment.tracks} of segment {segment.segment_id[:16]} are missing"
            )
        if segment.num_frames < config.num_frames:
            raise TrainingInputError(
                f"dataset {root}: segment {segment.segment_id[:16]} has {segment.num_frames} frames but"
                f" `num_frames` is {config.num_frames}; lower it or curate longer segments"
            )
    orientations = {s.height > s.width for s in segments}
    if config.batch > 1 and len(orientations) > 1:
        raise TrainingInputError(
            f"dataset {root}: landscape and portrait clips are trained at their own orientation, so a batch"
            f" cannot mix them; `batch` is {config.batch}: set it to 1 or train on one orientation"
        )
    return segments


def check_base(base_dir: Path, base: DiffusionBackend) -> ModelDirectory:
    """The base model directory: the pipeline class `base` names, with the parts training loads."""
    try:
        directory = validate_model_directory(base_dir, base, (*GENERATOR_PARTS, "tokenizer", "text_encoder"))
    except ModelDirectoryError as exc:
        raise TrainingInputError(f"base model for --base {base}: {exc}") from exc
    if directory.has_transformer_2:
        raise TrainingInputError(
            f"base model {base_dir}: two transformers (Wan2.2 A14B, high- and low-noise experts); training"
            " supports single-transformer bases (Wan2.1 I2V 14B, Wan2.1 VACE 14B) for now"
        )
    config = json.loads((base_dir / "transformer" / "config.json").read_text(encoding="utf-8"))
    if config.get("patch_size") is None:
        raise TrainingInputError(f"base model {base_dir}: transformer/config.json has no `patch_size`")
    return directory
