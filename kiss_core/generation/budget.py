"""What a request costs a diffusion backend, checked before the job is accepted (no torch here).

A diffusion backend generates at its native rate (`GeneratorSettings.native_fps`), in one window of
at most `max_frames` frames (4k+1), and the requested fps is interpolated afterwards. The
transformer's work and activation memory grow with its sequence length, the latent tokens:

    latent frames = (generated frames - 1) / 4 + 1        (the Wan VAE compresses time by 4)
    tokens        = latent frames x (height / 16) x (width / 16)

(the VAE compresses space by 8 and the transformer patches 2x2 latents: `patch_size` (1, 2, 2) in
every Wan 2.1/2.2 transformer config). 832x480 at 81 frames is 21 x 30 x 52 = 32,760 tokens.

A backend whose spec takes reference images (`BackendSpec.reference_images`: wan-vace) puts one latent
frame per reference image in front of the video's, and it gets every face crop: one per photo of each
person. Those frames are tokens too: 832x480 at 81 frames with 3 photos of each person is
(21 + 6) x 30 x 52 = 42,120.

The ingress calls `check_request_budget` with the request's photo count before it answers 202, so no
accepted job can be too long for the window or too large for the GPU; the Wan frame source checks
again, with the reference images it is about to use, before it runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiss_core.errors import ClipTooLong, TokenBudgetExceeded
from kiss_core.generation.backends.weights import BACKEND_SPECS, VAE_TEMPORAL_FACTOR, frames_to_generate
from kiss_core.schemas import VideoParams
from kiss_core.settings import GeneratorSettings

SPATIAL_TOKEN_FACTOR = 16  # VAE 8x, then 2x2 patches


@dataclass(frozen=True)
class RequestBudget:
    """The diffusion work of one request, at the backend's native rate."""

    backend: str
    native_fps: int
    planned_frames: int  # the plan's frames at the native rate
    generated_frames: int  # the 4k+1 frames the model is asked for
    latent_frames: int  # the video's
    reference_frames: int  # one per reference image, before the video's (0 unless the backend takes them)
    tokens: int  # (latent_frames + reference_frames) x (height / 16) x (width / 16)


def native_params(params: VideoParams, settings: GeneratorSettings) -> VideoParams:
    """The request as the diffusion backend plans it: same clip, at the native frame rate."""
    return params.model_copy(update={"fps": settings.native_fps})


def latent_frames(frames: int) -> int:
    """Latent frames of a `frames`-frame (4k+1) video: the VAE keeps the first and every 4th after it."""
    return (frames - 1) // VAE_TEMPORAL_FACTOR + 1


def tokens_per_latent_frame(width: int, height: int) -> int:
    """Transformer tokens of one latent frame (or reference image) of width x height."""
    return (height // SPATIAL_TOKEN_FACTOR) * (width // SPATIAL_TOKEN_FACTOR)


def latent_tokens(frames: int, width: int, height: int) -> int:
    """Transformer tokens of a `frames`-frame (4k+1) video of width x height."""
    return latent_frames(frames) * tokens_per_latent_frame(width, height)


def request_budget(
    params: VideoParams, settings: GeneratorSettings, backend: str | None = None, references: int = 0
) -> RequestBudget | None:
    """The work `params` asks of `backend` (default: the request's, else the service's); None for preview.

    `references`: the reference images the request gives, one per photo (every person's face crop);
    counted on a backend whose spec takes them, ignored on the others.
    """
    name = backend or params.backend or settings.backend
    spec = BACKEND_SPECS.get(name)
    if spec is None:
        return None
    if references < 0:
        raise ValueError(f"`references` must be >= 0 but is {references}")
    planned = native_params(params, settings).frame_count
    generated = frames_to_generate(planned)
    latent = latent_frames(generated)
    reference_frames = references if spec.reference_images else 0
    return RequestBudget(
        backend=name,
        native_fps=settings.native_fps,
        planned_frames=planned,
        generated_frames=generated,
        latent_frames=latent,
        reference_frames=reference_frames,
        tokens=(latent + reference_frames) * tokens_per_latent_frame(params.width, params.height),
    )


def max_seconds(settings: GeneratorSettings) -> float:
    """The longest clip one window holds: max_frames frames span (max_frames - 1) / native_fps seconds."""
    return (settings.max_frames - 1) / settings.native_fps


def check_request_budget(
    params: VideoParams, settings: GeneratorSettings, backend: str | None = None, references: int = 0
) -> RequestBudget | None:
    """Refuse (422) a request a diffusion backend cannot generate in one window or within `max_tokens`.

    `references` as in `request_budget`. Raises ClipTooLong or TokenBudgetExceeded naming the numbers (the
    reference images among them when the backend counts them); returns the budget (None for preview).
    """
    budget = request_budget(params, settings, backend, references)
    if budget is None:
        return None
    if budget.generated_frames > settings.max_frames:
        raise ClipTooLong(
            f"`seconds` {params.seconds:g} needs {budget.generated_frames} frames at the {budget.backend}"
            f" backend's native {budget.native_fps} fps, but one window holds {settings.max_frames}"
            f" ({max_seconds(settings):g} s); ask for at most {max_seconds(settings):g} seconds"
        )
    if budget.tokens > settings.max_tokens:
        grid = f"{params.height // SPATIAL_TOKEN_FACTOR} x {params.width // SPATIAL_TOKEN_FACTOR}"
        parts = f"{budget.latent_frames} latent frames x {grid}"
        advice = "ask for a smaller size or a shorter clip"
        if budget.reference_frames:
            per_frame = tokens_per_latent_frame(params.width, params.height)
            video, images = budget.latent_frames * per_frame, budget.reference_frames * per_frame
            parts += f" = {video}, + {budget.reference_frames} reference images x {grid} = {images}"
            if video <= settings.max_tokens:  # the photos tip it over
                advice = (
                    f"the video alone fits; each photo is one reference image on {budget.backend}:"
                    " send fewer photos of each person, or ask for a smaller size or a shorter clip"
                )
        raise TokenBudgetExceeded(
            f"{params.size} for {params.seconds:g} s is {budget.tokens} transformer tokens ({parts}) on"
            f" {budget.backend}, over the limit of {settings.max_tokens}; {advice}"
        )
    return budget
