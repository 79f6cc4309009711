"""TrainConfig: one pydantic model for a LoRA training run, loaded from the `--config` YAML.

Defaults suit the 14B bases on one GPU; the tests shrink the sizes and steps. Every field says what it does
so the docs' table is the config itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# peft target names: Wan's self- and cross-attention projections and the feed-forward pair, in every block
# (the VACE blocks included). `add_k_proj`/`add_v_proj` exist only on image-conditioned I2V transformers.
DEFAULT_TARGETS: tuple[str, ...] = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "ffn.net.0.proj",
    "ffn.net.2",
)


class ValidationConfig(BaseModel):
    """The fixed validation render: a synthetic pair (never a real person) through the current LoRA."""

    model_config = ConfigDict(extra="forbid")

    pair: tuple[int, int] = Field(
        (0, 1), description="Synthetic subject indices (kiss_core.faces.synthetic)."
    )
    style: Literal["peck", "romantic", "french", "cheek"] = Field(
        "peck", description="Kiss style of the plan."
    )
    width: int = Field(832, ge=16, description="Rendered width, pixels (divisible by 16).")
    height: int = Field(480, ge=16, description="Rendered height, pixels (divisible by 16).")
    num_frames: int = Field(33, ge=1, description="Frames rendered (4k+1).")
    steps: int = Field(20, ge=1, description="Denoising steps of the validation render.")
    seed: int = Field(0, description="Noise seed of the render: the same every time, so renders compare.")


class TrainConfig(BaseModel):
    """A LoRA training run on a curated set. Loaded from YAML by `load_train_config`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        "kiss",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
        description="The LoRA's name: the files are loras/<name>.safetensors + <name>.yaml and requests"
        " select it with lora=<name>.",
    )
    trigger_words: str = Field(
        "kissgen-kiss",
        description="Put in front of every training caption (and by the service in front of the prompt when"
        " the LoRA is active), so the LoRA's style is tied to these words.",
    )
    scale: float = Field(1.0, ge=0.0, le=4.0, description="Adapter weight written into <name>.yaml.")
    rank: int = Field(32, description="LoRA rank r (>= 1).")
    alpha: int = Field(32, ge=1, description="LoRA alpha; the update is scaled by alpha / rank.")
    targets: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TARGETS),
        min_length=1,
        description="Module name suffixes that get a LoRA (peft target_modules): attention q/k/v/out and the"
        " two FFN projections by default.",
    )
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate (constant after `warmup_steps`).")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay on the LoRA weights.")
    warmup_steps: int = Field(0, ge=0, description="Linear learning-rate warm-up, steps.")
    max_grad_norm: float = Field(
        1.0, gt=0, description="Gradient clipping (global L2 norm of the LoRA grads)."
    )
    steps: int = Field(
        2000, ge=1, description="Optimizer steps in all (a resumed run ends at the same step)."
    )
    batch: int = Field(1, ge=1, description="Clips per worker per step (global batch = batch x workers).")
    seed: int = Field(0, description="Seed of the LoRA init, the clip order, the noise and the timesteps.")
    checkpoint_every: int = Field(100, ge=1, description="Steps between Ray Train checkpoints.")
    keep_checkpoints: int = Field(2, ge=1, description="Checkpoints Ray Train keeps (the newest).")
    validate_every: int = Field(
        250,
        ge=0,
        description="Steps between validation renders (0: none; the last step always validates when > 0).",
    )
    log_every: int = Field(
        1, ge=1, description="Steps between loss lines in TensorBoard and ray.train.report."
    )
    contact_weight: float = Field(
        2.0,
        ge=1.0,
        description="Loss weight of the latent tokens in the contact region (lips and where the faces meet);"
        " other tokens weigh 1. 1 turns the weighting off.",
    )
    mask_dilation: float = Field(
        0.15, ge=0.0, le=1.0, description="Dilation of the contact region, as a share of the mean face width."
    )
    bf16: bool = Field(
        True,
        description="Frozen base weights and activations in bfloat16 on a GPU (LoRA weights and optimizer"
        " state stay float32). On CPU the run is float32 whatever this says (bf16 matmuls are slow there).",
    )
    gradient_checkpointing: bool = Field(
        True, description="Recompute each transformer block in the backward pass instead of storing it."
    )
    weighting_scheme: Literal["none", "logit_normal", "mode", "sigma_sqrt", "cosmap"] = Field(
        "logit_normal",
        description="Timestep density and loss weighting of diffusers' flow-matching examples"
        " (compute_density_for_timestep_sampling / compute_loss_weighting_for_sd3).",
    )
    logit_mean: float = Field(0.0, description="Mean of the logit-normal timestep density.")
    logit_std: float = Field(1.0, gt=0, description="Std of the logit-normal timestep density.")
    mode_scale: float = Field(1.29, description="Scale of the `mode` timestep density.")
    width: int = Field(832, ge=16, description="Training width, pixels: clips are resized to it (/16).")
    height: int = Field(480, ge=16, description="Training height, pixels: clips are resized to it (/16).")
    num_frames: int = Field(
        33, ge=1, description="Frames per training clip (4k+1): the first ones of each segment are used."
    )
    max_sequence_length: int = Field(512, ge=1, description="UMT5 tokens of a caption (Wan uses 512).")
    validation: ValidationConfig = Field(
        default_factory=ValidationConfig, description="The fixed synthetic validation render."
    )
    cache_dir: Path | None = Field(
        None,
        description="Where precomputed latents and embeddings are cached by content hash: a local directory;"
        " None: the service's storage (Settings().storage, local or S3) under training-cache/.",
    )
    checkpoint_storage: str | None = Field(
        None,
        description="Where Ray Train keeps checkpoints: None: OUT/checkpoints; `storage`: the service's"
        " storage (Settings().storage) under training-checkpoints/, its S3 bucket and credentials when it is"
        " S3; a local directory; or s3://bucket/prefix with pyarrow's default AWS credentials.",
    )
    max_failures: int = Field(
        3, ge=0, description="Worker failures Ray Train recovers from (from a checkpoint)."
    )

    @field_validator("rank")
    @classmethod
    def _rank_positive(cls, rank: int) -> int:
        if rank < 1:
            raise ValueError(f"`rank` must be >= 1 (a rank-0 LoRA has no weights) but is {rank}")
        return rank

    @model_validator(mode="after")
    def _sizes(self) -> TrainConfig:
        for what, value in (("width", self.width), ("height", self.height)):
            if value % 16:
                raise ValueError(f"`{what}` has to be divisible by 16 but is {value}")
        if (self.num_frames - 1) % 4:
            raise ValueError(f"`num_frames` has to be 4k+1 (Wan's VAE) but is {self.num_frames}")
        v = self.validation
        if v.width % 16 or v.height % 16 or (v.num_frames - 1) % 4:
            raise ValueError(
                f"`validation` size has to be divisible by 16 with 4k+1 frames but is {v.width}x{v.height},"
                f" {v.num_frames} frames"
            )
        return self


class TrainConfigError(ValueError):
    """The config YAML does not parse or does not validate; the message names the field."""


def load_train_config(path: Path | None, **overrides: object) -> TrainConfig:
    """The YAML at `path` (None: the defaults) with `overrides` on top, validated."""
    data: dict[str, object] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise TrainConfigError(f"training config {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise TrainConfigError(f"training config {path}: a mapping of fields expected")
        data.update(loaded)
    data.update(overrides)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise TrainConfigError(f"training config {path or '(defaults)'}: {exc}") from exc
