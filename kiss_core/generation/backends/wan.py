"""Wan 2.x diffusion backends, split across the graph the way the serving system runs them.

- `WanConditioner` (IdentityEncoder, a GPU share): the tokenizer and UMT5 text encoder, with an LRU
  cache of prompt embeddings (styles repeat, so most requests hit), and for image-conditioned I2V
  models the CLIP image encoder, which embeds the composed start frame.
- `WanI2VFrames` / `WanVACEFrames` (VideoGenerator, one GPU): only the transformer(s), the VAE and
  the scheduler. They take the precomputed embeddings from the Conditioning, report progress after
  every denoising step and stop between steps when the progress callback raises (a deleted job).

Both sides load with diffusers' own `from_pretrained` (the parts the other side holds passed as
None), after `validate_model_directory` has named anything missing. LoRAs load through diffusers'
LoRA loading (peft) once at start, into both transformers of a Wan2.2 A14B, and are switched per
request with `set_adapters`; under `fuse_lora` the default one is fused into the weights instead.
The speed settings (attention backend, first-block cache, compiled blocks, batched CFG, VAE
tiling) are applied here; bench/gpu_denoise.py measures them. `lip_attention_bias` > 0 biases every
self-attention toward the plan's lip tokens for the pipeline call (backends.lip_attention).

See kiss_core.generation.backends.weights for the directory layout and the 4k+1 frame-count rule.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image

from kiss_core.errors import GenerationError
from kiss_core.generation.backends.base import ShareDone, preview_sink
from kiss_core.generation.backends.choice import GenerationChoice, model_prompt
from kiss_core.generation.backends.guidance import batched_guidance
from kiss_core.generation.backends.lip_attention import lip_attention, plan_lip_tokens
from kiss_core.generation.backends.loras import LoraSpec, discover_loras, fused_lora
from kiss_core.generation.backends.weights import (
    CONDITIONER_PARTS,
    GENERATOR_PARTS,
    IMAGE_PARTS,
    PIPELINE_CLASSES,
    DiffusionBackend,
    frames_to_generate,
    model_directory_error,
    refuse_unsupported_settings,
    shares_text_encoder,
    validate_model_directory,
)
from kiss_core.generation.budget import check_request_budget, native_params
from kiss_core.generation.conditioning import Conditioning, ModelConditioning
from kiss_core.generation.gpu import cap_gpu_memory
from kiss_core.generation.latent_preview import LatentRgbProjection, fit_latent_rgb, preview_image
from kiss_core.media.interpolate import resample_frames
from kiss_core.scene.choreography import KissPlan, plan_kiss
from kiss_core.scene.lighting import harmonize_photos
from kiss_core.scene.pose_video import render_pose_frames
from kiss_core.scene.render import PreviewCompositor
from kiss_core.schemas import SubjectAnalysis, VideoParams
from kiss_core.settings import GeneratorSettings

logger = logging.getLogger(__name__)

_DECODE_SHARE = 0.9  # share of the progress the denoising steps cover; the VAE decode takes the rest
_POSE_BACKGROUND = 32  # VACE pose videos work better on dark grey than on pure black


def torch_device(settings: GeneratorSettings) -> torch.device:
    if settings.device:
        return torch.device(settings.device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torch_dtype(settings: GeneratorSettings, device: torch.device) -> torch.dtype:
    """`auto`: bfloat16 on a GPU (what Wan is trained in), float32 on CPU (bf16 matmuls are slow there)."""
    if settings.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, settings.dtype)


def text_encoder_dtype(dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """UMT5's dtype: never float16 (T5's feed-forward activations overflow it); bfloat16 where supported."""
    if dtype != torch.float16:
        return dtype
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float32
    return torch.bfloat16


def component_dtypes(settings: GeneratorSettings, device: torch.device) -> dict[str, torch.dtype]:
    """from_pretrained's per-component dtypes: `dtype` for the transformers, float32 for the VAE and the CLIP
    image encoder (as diffusers' Wan I2V example loads them), UMT5 never in float16."""
    dtype = torch_dtype(settings, device)
    return {
        "default": dtype,
        "vae": torch.float32,
        "image_encoder": torch.float32,
        "text_encoder": text_encoder_dtype(dtype, device),
    }


def device_placement(device: torch.device) -> dict[str, str]:
    """from_pretrained's `device_map`, so each component's weights load straight onto `device` (accelerate's
    meta-device loading) instead of being built in host memory first and copied over.

    diffusers 0.42 takes a device type ("cuda", "cpu") for a pipeline; a CUDA index other than the current one
    loads on the host and is moved by the caller's `.to(device)`.
    """
    if device.type == "cpu":
        return {"device_map": "cpu"}
    if device.type == "cuda" and device.index in (None, torch.cuda.current_device()):
        return {"device_map": "cuda"}
    return {}


def shifted_scheduler(scheduler: Any, shift: float | None, directory: Path) -> Any:
    """`scheduler` with its flow-matching shift set to `shift` (None: as the model directory configures it).

    Wan checkpoints ship FlowMatchEulerDiscreteScheduler (`shift`) or UniPCMultistepScheduler (`flow_shift`);
    diffusers' Wan examples set 3.0 at 480p and 5.0 at 720p.
    """
    if shift is None:
        return scheduler
    key = next((k for k in ("flow_shift", "shift") if k in scheduler.config), None)
    if key is None:
        raise model_directory_error(
            directory, f"`flow_shift` is set but its {type(scheduler).__name__} has no flow shift to set"
        )
    return type(scheduler).from_config(scheduler.config, **{key: shift})


def _pipeline_class(backend: DiffusionBackend) -> Any:
    import diffusers

    return getattr(diffusers, PIPELINE_CLASSES[backend])


def adapter_name(lora: str) -> str:
    """peft keeps adapters in ModuleDicts, whose keys may not contain dots."""
    return lora.replace(".", "_")


def start_frame(
    photos: Mapping[str, np.ndarray],
    analyses: Mapping[str, SubjectAnalysis],
    params: VideoParams,
    lighting_strength: float,
) -> np.ndarray:
    """The composed two-person first frame, exactly as the producer's backends see it.

    The producer harmonises the lighting before it hands the photos to a backend, so the encoder side
    does the same before rendering frame 0 of the plan.
    """
    plan = plan_kiss(analyses, params)
    landmarks = {s: np.asarray(analyses[s].landmarks, dtype=np.float64) for s in ("a", "b")}
    harmonized = harmonize_photos(dict(photos), landmarks, lighting_strength)
    return next(iter(PreviewCompositor().render(plan, harmonized, analyses)))


class WanConditioner:
    """The IdentityEncoder's part of a Wan backend: prompt embeddings (cached) and start-image embeddings."""

    def __init__(
        self,
        backend: DiffusionBackend,
        settings: GeneratorSettings,
        lighting_strength: float = 0.5,
        share_with: WanConditioner | None = None,
    ):
        """`share_with`: a conditioner already loaded for another backend; its UMT5 and tokenizer are
        reused when they are the same files (`share_text_encoder`), so one replica holds one UMT5."""
        self.backend = backend
        self.settings = settings
        self.lighting_strength = lighting_strength
        self.directory = validate_model_directory(settings.model_root / backend, backend, CONDITIONER_PARTS)
        self.loras: dict[str, LoraSpec] = {
            n: s for n, s in discover_loras(settings.model_root).items() if s.base == backend
        }
        self.device = torch_device(settings)
        # Through cap_gpu_memory: torch refuses the bare torch.device("cuda") an unset `device` gives.
        cap_gpu_memory(settings.encoder_memory_fraction, str(self.device))
        keep = set(CONDITIONER_PARTS) | (set(IMAGE_PARTS) if self.directory.image_conditioned else set())
        skipped = {name: None for name in self.directory.components if name not in keep}
        shared: dict[str, Any] = {}
        if share_with is not None and shares_text_encoder(
            share_with.directory.path, self.directory.path, settings.share_text_encoder
        ):
            shared = {"text_encoder": share_with.pipe.text_encoder, "tokenizer": share_with.pipe.tokenizer}
        self.pipe: Any = _pipeline_class(backend).from_pretrained(
            self.directory.path,
            **skipped,
            **shared,
            dtype=component_dtypes(settings, self.device),
            **device_placement(self.device),
        )
        self.pipe.to(self.device)
        self._cache: OrderedDict[tuple[str, str | None], tuple[torch.Tensor, torch.Tensor | None]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def prompt_embeds(
        self, prompt: str, negative_prompt: str | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """UMT5 embeddings (CPU) of the prompt and, unless None, the negative prompt; LRU-cached."""
        key = (prompt, negative_prompt)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                self.hits += 1
                return self._cache[key]
            self.misses += 1
            with torch.inference_mode():
                positive, negative = self.pipe.encode_prompt(
                    prompt=prompt,
                    negative_prompt=negative_prompt,
                    do_classifier_free_guidance=negative_prompt is not None,
                    max_sequence_length=self.settings.max_sequence_length,
                    device=self.device,
                )
            value = (positive.cpu(), None if negative is None else negative.cpu())
            if self.settings.prompt_cache_size > 0:
                self._cache[key] = value
                while len(self._cache) > self.settings.prompt_cache_size:
                    self._cache.popitem(last=False)
            return value

    def image_embeds(self, image: np.ndarray) -> torch.Tensor | None:
        """CLIP embeddings (CPU) of the start frame, for transformers that take them; else None."""
        if not self.directory.image_conditioned:
            return None
        with self._lock, torch.inference_mode():
            return self.pipe.encode_image(Image.fromarray(image), self.device).cpu()

    def check_health(self) -> None:
        """One UMT5 forward on one token, so a broken device or encoder fails the check (a request in
        flight holds the lock briefly: the check waits for it)."""
        input_ids = torch.zeros(1, 1, dtype=torch.long, device=self.device)
        with self._lock, torch.inference_mode():
            hidden = self.pipe.text_encoder(input_ids=input_ids).last_hidden_state
            if not bool(torch.isfinite(hidden).all()):
                raise RuntimeError(f"{self.backend}: the text encoder returns non-finite values")

    def condition(
        self,
        photos: Mapping[str, np.ndarray],
        analyses: Mapping[str, SubjectAnalysis],
        params: VideoParams,
        choice: GenerationChoice,
    ) -> ModelConditioning:
        prompt, negative = model_prompt(params, choice, self.loras)
        positive, negative_embeds = self.prompt_embeds(prompt, None if choice.fast else negative)
        image = None
        if self.directory.image_conditioned:
            image = self.image_embeds(start_frame(photos, analyses, params, self.lighting_strength))
        return ModelConditioning(
            prompt=prompt,
            prompt_embeds=positive,
            negative_prompt_embeds=negative_embeds,
            image_embeds=image,
            fast=choice.fast,
            lora=choice.lora,
            fast_lora=choice.fast_lora,
        )


class WanFrames:
    """The VideoGenerator's part of a Wan backend: denoiser, VAE and scheduler; one video at a time."""

    name: DiffusionBackend

    def __init__(self, settings: GeneratorSettings, compositor: PreviewCompositor | None = None):
        self.settings = settings
        self.compositor = compositor or PreviewCompositor()
        refuse_unsupported_settings(settings, self.name)
        self.directory = validate_model_directory(settings.model_root / self.name, self.name, GENERATOR_PARTS)
        loras = {n: s for n, s in discover_loras(settings.model_root).items() if s.base == self.name}
        self.fused = fused_lora(settings, self.name, loras)
        if settings.fuse_lora:  # only the fused LoRA is loaded; none if the default is for the other backend
            loras = {self.fused: loras[self.fused]} if self.fused else {}
        self.loras: dict[str, LoraSpec] = loras
        self.device = torch_device(settings)
        keep = {*GENERATOR_PARTS, "transformer_2"}
        skipped = {name: None for name in self.directory.components if name not in keep}
        # The Wan VAE runs in float32 whatever the transformer's dtype (as diffusers' Wan examples do).
        offloaded = settings.offload != "none"
        self.pipe = _pipeline_class(self.name).from_pretrained(
            self.directory.path,
            **skipped,
            dtype=component_dtypes(settings, self.device),
            **device_placement(torch.device("cpu") if offloaded else self.device),
        )
        if not offloaded:
            self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.preview_projection = self._fit_preview() if settings.progress_preview_every_steps > 0 else None
        self._load_loras()
        self._offload()
        self._apply_speed_settings()
        # The scheduler per quality: the directory's, with `flow_shift` / `fast_flow_shift` when set.
        self.schedulers = {
            False: shifted_scheduler(self.pipe.scheduler, settings.flow_shift, self.directory.path),
            True: shifted_scheduler(
                self.pipe.scheduler, settings.fast_flow_shift or settings.flow_shift, self.directory.path
            ),
        }
        self._lock = threading.Lock()
        self.steps_done = 0  # denoising steps completed since start (health and tests)

    def frames(
        self,
        plan: KissPlan,
        photos: Mapping[str, np.ndarray],
        analyses: Mapping[str, SubjectAnalysis],
        conditioning: Conditioning,
        params: VideoParams,
        progress: ShareDone,
    ) -> Iterator[np.ndarray]:
        model = conditioning.model
        if model is None or conditioning.backend != self.name:
            raise GenerationError(
                f"the {self.name} backend needs the conditioning made for it, got {conditioning.backend!r}"
                f" {'with' if model is not None else 'without'} model embeddings"
            )
        # Generated at the model's native rate and length; the requested fps is interpolated after decode.
        native = native_plan(analyses, params, self.settings)
        count = frames_to_generate(native.frame_count, self.pipe.vae_scale_factor_temporal)
        fast = model.fast
        steps = self.settings.fast_steps if fast else self.settings.steps
        guidance = 1.0 if fast or model.negative_prompt_embeds is None else self.settings.guidance_scale
        guidance_2 = guidance if guidance == 1.0 else (self.settings.guidance_scale_2 or guidance)

        projection = self.preview_projection
        sink = preview_sink(progress)
        every = self.settings.progress_preview_every_steps

        inputs = self.inputs(native, photos, analyses, conditioning, count)
        # The budget again, with the reference images about to go in front of the video (VACE's face crops).
        references = len(inputs.get("reference_images") or [])
        check_request_budget(params, self.settings, self.name, references)

        def on_step(pipe: Any, index: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            """After each step: count it and report; an exception here (job deleted) ends the loop. Every
            `progress_preview_every_steps` steps the video's middle latent frame goes out as a preview."""
            self.steps_done += 1
            progress(_DECODE_SHARE * (index + 1) / steps)
            if sink is not None and projection is not None and every and (index + 1) % every == 0:
                latents = tensors.get("latents")
                if latents is not None and latents.ndim == 5 and latents.shape[1] == projection.channels:
                    middle = middle_video_latent(latents, references).float().cpu().numpy()
                    sink(preview_image(middle, projection))
            return tensors

        negative = model.negative_prompt_embeds if guidance > 1.0 else None
        guiding: Any = contextlib.nullcontext()
        if negative is not None and self.settings.cfg_batched:
            scales = [guidance, guidance_2][: len(self.transformers())]
            guiding = batched_guidance(self.transformers(), negative.to(self.device), scales)
            negative, guidance, guidance_2 = None, 1.0, 1.0  # the pipeline runs unguided; the hooks guide
        with self._lock, torch.inference_mode(), guiding, self._lip_bias(native, count, references):
            self._activate_loras(model)
            self.pipe.scheduler = self.schedulers[fast]
            if self.settings.step_cache_threshold is not None:  # a cancelled video leaves stale state
                for transformer in self.transformers():
                    transformer._reset_stateful_cache()
            video = self.pipe(
                **inputs,
                prompt_embeds=model.prompt_embeds.to(self.device),
                negative_prompt_embeds=None if negative is None else negative.to(self.device),
                height=plan.height,
                width=plan.width,
                num_frames=count,
                num_inference_steps=steps,
                guidance_scale=guidance,
                **self._expert_guidance(guidance_2),
                generator=torch.Generator("cpu").manual_seed(params.seed),
                output_type="np",
                callback_on_step_end=on_step,
            ).frames[0]
        progress(1.0)
        generated = [to_uint8_rgb(frame, plan.width, plan.height) for frame in video]
        del video  # the decoded float32 frames (0.9 GB at 1280x720, 81 frames): not held while encoding
        yield from resample_frames(generated, self.settings.native_fps, plan.fps, plan.frame_count)

    def _lip_bias(
        self, native: KissPlan, count: int, references: int = 0
    ) -> contextlib.AbstractContextManager[Any]:
        """`lip_attention_bias` > 0: every transformer's self-attention biased toward the lip tokens of the
        `native` plan generated as `count` frames, the plain processors back afterwards (also on an error or
        a cancel); 0: nothing is installed. `references`: VACE's reference images, each one latent frame in
        front of the video's (no lip tokens there)."""
        weight = self.settings.lip_attention_bias
        if weight <= 0.0:
            return contextlib.nullcontext()
        transformer = self.pipe.transformer
        temporal = self.pipe.vae_scale_factor_temporal * transformer.config.patch_size[0]
        spatial = self.pipe.vae_scale_factor_spatial * transformer.config.patch_size[1]
        tokens = plan_lip_tokens(native, count, temporal=temporal, spatial=spatial)
        per_frame = (native.height // spatial) * (native.width // spatial)
        tokens = torch.cat([tokens.new_zeros(references * per_frame), tokens]).to(self.device)
        with contextlib.ExitStack() as stack:
            for denoiser in self.transformers():
                stack.enter_context(lip_attention(denoiser, tokens, weight))
            return stack.pop_all()

    def inputs(
        self,
        plan: KissPlan,
        photos: Mapping[str, np.ndarray],
        analyses: Mapping[str, SubjectAnalysis],
        conditioning: Conditioning,
        count: int,
    ) -> dict[str, Any]:
        """The pipeline's backend-specific inputs (start image, control video, references)."""
        raise NotImplementedError

    def _expert_guidance(self, scale: float) -> dict[str, float]:
        """`guidance_scale_2` for a pipeline with a low-noise expert (Wan2.2 A14B); the others refuse it."""
        return {} if self.pipe.config.boundary_ratio is None else {"guidance_scale_2": scale}

    def transformers(self) -> list[Any]:
        """The denoiser(s): Wan2.2 A14B has a second transformer for the low-noise steps."""
        return [
            t for t in (self.pipe.transformer, getattr(self.pipe, "transformer_2", None)) if t is not None
        ]

    def _fit_preview(self) -> LatentRgbProjection | None:
        """The progress preview's latent-to-RGB map, fitted from this pipeline's VAE (one small encode, before
        any offload, on the generator's device); None, with a warning, when the fit fails: no previews then,
        the backend itself is not affected."""
        vae = self.pipe.vae
        home = vae.device
        try:
            vae.to(self.device)  # under `offload` still on the host here: fitted on the device all the same
            return fit_latent_rgb(vae, self.device, vae.dtype)
        except Exception:
            logger.warning(
                "%s: fitting the latent preview failed; no progress previews", self.name, exc_info=True
            )
            return None
        finally:
            vae.to(home)

    def _load_loras(self) -> None:
        """Every LoRA for this backend as a switchable adapter, or under `fuse_lora` the default one fused.

        A pipeline with a second transformer (Wan2.2 A14B, the low-noise expert) gets each adapter in both,
        from the LoRA's `low_noise_weights` file when it has one.
        """
        for spec in self.loras.values():
            name = adapter_name(spec.name)
            self._load_lora_file(spec.path, name, "transformer")
            if self.directory.has_transformer_2:
                self._load_lora_file(spec.low_noise_path or spec.path, name, "transformer_2")
        if self.fused:
            spec = self.loras[self.fused]
            components = (
                ["transformer", "transformer_2"] if self.directory.has_transformer_2 else ["transformer"]
            )
            self.pipe.fuse_lora(
                components=components, lora_scale=spec.scale, adapter_names=[adapter_name(spec.name)]
            )
            self.pipe.unload_lora_weights()  # the fused weights stay; the LoRA layers and their cost go

    def _load_lora_file(self, path: Path, name: str, component: str) -> None:
        """One LoRA file into one transformer, in any layout diffusers' Wan loader converts (diffusers/peft,
        ComfyUI `diffusion_model.`, kohya/musubi `lora_unet_`, with `.alpha`, `diff_b` and image-attention
        keys). A file it cannot read, or whose keys reach no module of the transformer (diffusers only logs
        that), stops the replica naming the file: a silently ignored LoRA would serve unstyled videos.
        """
        try:
            self.pipe.load_lora_weights(
                str(path), adapter_name=name, load_into_transformer_2=component == "transformer_2"
            )
        except (ValueError, KeyError, RuntimeError) as exc:
            raise model_directory_error(
                path.parent, f"`{path.name}` does not load into {component}: {exc}"
            ) from exc
        if name not in self.pipe.get_list_adapters().get(component, []):
            raise model_directory_error(
                path.parent,
                f"`{path.name}` matches no module of {component}: none of its keys name a layer of this"
                f" {self.name} transformer (a LoRA for another model?)",
            )

    def _offload(self) -> None:
        """The opt-in CPU offload (`offload`), after the LoRAs are in and before anything is compiled."""
        if self.settings.offload == "model":
            self.pipe.enable_model_cpu_offload(device=self.device)
        elif self.settings.offload == "group":
            for transformer in self.transformers():
                transformer.enable_group_offload(
                    onload_device=self.device,
                    offload_device=torch.device("cpu"),
                    offload_type="block_level",
                    num_blocks_per_group=1,
                    use_stream=self.device.type == "cuda",
                )
            self.pipe.vae.to(self.device)

    def _apply_speed_settings(self) -> None:
        """The generator settings' speed levers, after the LoRAs are in (compiling first would recompile).

        The first-block cache decides per step in Python whether to skip, so with it the compiled blocks
        are not one full graph.
        """
        threshold = self.settings.step_cache_threshold
        self.compiled = self.settings.compile_blocks and (self.settings.fuse_lora or not self.loras)
        if self.settings.compile_blocks and not self.compiled:
            # peft's active adapters and scales are Python state that dynamo guards on: every adapter set a
            # request switches to would recompile the blocks, and past dynamo's limit they run eagerly.
            logger.warning(
                "compile_blocks is off for %s: its LoRAs %s are switched per request, which recompiles the"
                " blocks for every adapter set; fuse the default one (fuse_lora) to compile",
                self.name,
                sorted(self.loras),
            )
        for transformer in self.transformers():
            if self.settings.attention_backend is not None:
                transformer.set_attention_backend(self.settings.attention_backend)
            if threshold is not None:
                from diffusers import FirstBlockCacheConfig

                transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
            if self.compiled:
                transformer.compile_repeated_blocks(
                    fullgraph=threshold is None, backend=self.settings.compile_backend
                )
        if self.settings.vae_tiling:
            self.pipe.vae.enable_tiling()

    def _activate_loras(self, model: ModelConditioning) -> None:
        """The request's LoRAs active at their scales, every other adapter off."""
        if self.settings.fuse_lora:
            if model.lora != self.fused or model.fast_lora is not None:
                raise GenerationError(
                    f"{self.name} has {self.fused!r} fused into its weights (fuse_lora); asked for"
                    f" {model.lora!r} and {model.fast_lora!r}"
                )
            return
        if not self.loras:
            if model.lora or model.fast_lora:
                raise GenerationError(f"no LoRAs are loaded for {self.name}; asked for {model.lora!r}")
            return
        wanted = [n for n in (model.lora, model.fast_lora) if n is not None]
        missing = [n for n in wanted if n not in self.loras]
        if missing:
            raise GenerationError(
                f"LoRAs {missing} are not loaded for {self.name}; loaded: {sorted(self.loras)}"
            )
        if not wanted:
            self.pipe.disable_lora()
            return
        self.pipe.enable_lora()
        self.pipe.set_adapters([adapter_name(n) for n in wanted], [self.loras[n].scale for n in wanted])

    def check_health(self) -> None:
        """One transformer forward on a one-token latent, so a broken device or model fails the check.

        While a video is being denoised the check does not wait for it (minutes, far past Serve's health
        check timeout, which would kill a working replica): the running video is the proof of life, and
        a dead device fails it.
        """
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._forward_one_token()
        finally:
            self._lock.release()

    def _forward_one_token(self) -> None:
        transformer = self.pipe.transformer
        config, dtype = transformer.config, transformer.dtype
        _, height, width = config.patch_size

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(*shape, device=self.device, dtype=dtype)

        extra: dict[str, torch.Tensor] = {}
        if getattr(config, "image_dim", None) is not None:
            extra["encoder_hidden_states_image"] = zeros(1, 1, config.image_dim)
        if getattr(config, "vace_layers", None):
            extra["control_hidden_states"] = zeros(1, config.vace_in_channels, 1, height, width)
            extra["control_hidden_states_scale"] = torch.ones(len(config.vace_layers), device=self.device)
        with torch.inference_mode():
            transformer(
                hidden_states=zeros(1, config.in_channels, 1, height, width),
                timestep=torch.tensor([500], device=self.device),
                encoder_hidden_states=zeros(1, 4, config.text_dim),
                return_dict=False,
                **extra,
            )


class WanI2VFrames(WanFrames):
    """Wan image-to-video: the composed two-person first frame is the start image."""

    name = "wan-i2v"

    def __init__(self, settings: GeneratorSettings, compositor: PreviewCompositor | None = None):
        super().__init__(settings, compositor)
        # diffusers 0.42's check_inputs refuses `image` together with `image_embeds`, yet __call__ needs the
        # image for the VAE-encoded condition latents whenever the embeddings are precomputed (the image
        # encoder lives on the other side of the graph). Its other checks still run; diffusers is dropping
        # this one (huggingface/diffusers#13693 does so for the Wan animate pipeline).
        check_inputs = self.pipe.check_inputs
        signature = inspect.signature(check_inputs)

        def check_inputs_with_embeds(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            if bound.arguments.get("image") is not None:
                bound.arguments["image_embeds"] = None
            return check_inputs(*bound.args, **bound.kwargs)

        self.pipe.check_inputs = check_inputs_with_embeds

    def inputs(
        self,
        plan: KissPlan,
        photos: Mapping[str, np.ndarray],
        analyses: Mapping[str, SubjectAnalysis],
        conditioning: Conditioning,
        count: int,
    ) -> dict[str, Any]:
        assert conditioning.model is not None
        first = next(iter(self.compositor.render(plan, photos, analyses)))
        inputs: dict[str, Any] = {"image": Image.fromarray(first)}
        if self.pipe.transformer.config.image_dim is not None:
            if conditioning.model.image_embeds is None:
                raise GenerationError(
                    f"the {self.name} transformer takes image embeddings; none were computed"
                )
            inputs["image_embeds"] = conditioning.model.image_embeds.to(self.device)
        return inputs


class WanVACEFrames(WanFrames):
    """Wan VACE: the aligned face crops as references (every photo's, a's then b's, when a request gave
    several of one person), the plan drawn as a pose control video."""

    name = "wan-vace"

    def inputs(
        self,
        plan: KissPlan,
        photos: Mapping[str, np.ndarray],
        analyses: Mapping[str, SubjectAnalysis],
        conditioning: Conditioning,
        count: int,
    ) -> dict[str, Any]:
        poses = [Image.fromarray(f) for f in render_pose_frames(plan, background=_POSE_BACKGROUND)]
        poses += [poses[-1]] * (count - len(poses))  # the 4k+1 tail holds the last pose
        references = [Image.fromarray(c) for s in ("a", "b") for c in conditioning.subjects[s].crops]
        return {
            "video": poses,
            "reference_images": references,
            "conditioning_scale": self.settings.vace_conditioning_scale,
        }


FRAME_SOURCES: dict[str, type[WanFrames]] = {"wan-i2v": WanI2VFrames, "wan-vace": WanVACEFrames}


def load_frame_source(backend: DiffusionBackend, settings: GeneratorSettings) -> WanFrames:
    return FRAME_SOURCES[backend](settings)


def native_plan(
    analyses: Mapping[str, SubjectAnalysis], params: VideoParams, settings: GeneratorSettings
) -> KissPlan:
    """The plan a diffusion backend generates along: the request's at the native rate, with the camera the
    producer plans with (`camera_push_in`), so the pose video and the lip tokens move as the output check,
    the report and the flicker mask expect."""
    return plan_kiss(analyses, native_params(params, settings), settings.camera_push_in)


def middle_video_latent(latents: torch.Tensor, references: int) -> torch.Tensor:
    """(C, h, w): the middle frame of the video in the first sample of (B, C, F, h, w) latents.

    VACE puts one latent frame per reference image in front of the video's until the loop ends (diffusers'
    WanVACEPipeline drops them after the last step), so those are skipped."""
    video_frames = latents.shape[2] - references
    if video_frames < 1:
        raise ValueError(
            f"{latents.shape[2]} latent frames cannot hold {references} reference images and a video"
        )
    return latents[0, :, references + video_frames // 2]


def to_uint8_rgb(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    """A pipeline frame (H, W, 3) float in [0, 1] as uint8 RGB of exactly width x height."""
    pixels = np.clip(np.rint(np.asarray(frame, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)
    if pixels.shape[:2] != (height, width):
        pixels = cv2.resize(pixels, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(pixels)
