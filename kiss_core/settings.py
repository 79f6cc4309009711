"""All configuration, in one typed object per concern, read from `KISS_*` variables and an optional YAML file.

Defaults run on a laptop with no GPU and no services: local-directory storage, the CPU preview
generator, no trace export. Nested fields use `__`: `KISS_STORAGE__BACKEND=s3`.
The YAML file named by `KISS_CONFIG_FILE` is read first; environment variables override it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class StorageSettings(BaseModel):
    backend: Literal["local", "s3"] = Field(
        "local", description="local: a directory; s3: any S3 server via minio."
    )
    local_root: Path = Field(Path("./data"), description="Root directory of the local store.")
    endpoint: str = Field("127.0.0.1:9000", description="S3 endpoint host:port (no scheme).")
    access_key: str = Field("minioadmin", description="S3 access key.")
    secret_key: str = Field("minioadmin", description="S3 secret key.")
    secure: bool = Field(False, description="Use TLS to reach the S3 endpoint.")
    region: str | None = Field(None, description="S3 region; None lets the SDK ask the server.")
    bucket: str = Field("kissgen", description="Bucket holding inputs, manifests and outputs.")
    public_endpoint: str | None = Field(
        None, description="host:port clients use for presigned URLs, when it differs from `endpoint`."
    )
    presign_seconds: int = Field(3600, ge=60, le=7 * 24 * 3600, description="Lifetime of presigned URLs.")
    retry_deadline_s: float = Field(
        60.0, gt=0, description="How long an S3 call keeps retrying an unreachable server before failing."
    )


class LimitSettings(BaseModel):
    max_upload_bytes: int = Field(15 * 2**20, description="Largest accepted photo, bytes.")
    max_image_pixels: int = Field(
        40_000_000, description="Largest accepted photo, pixels (decompression bombs)."
    )
    min_image_side: int = Field(64, description="Smallest accepted photo side, pixels.")
    max_request_bytes: int = Field(40 * 2**20, description="Largest accepted request body, bytes.")
    max_photos_per_subject: int = Field(
        3,
        ge=1,
        le=8,
        description="Photos a request may give of each person (repeated subject_a / subject_b fields); all of"
        " one person, the best composes the scene, their mean embedding is the identity reference.",
    )
    max_active_jobs: int = Field(
        16, ge=1, description="Jobs one ingress replica runs at once; beyond, POST answers 503 + Retry-After."
    )
    retry_after_s: int = Field(10, ge=1, description="Retry-After sent with 503 answers.")


class FaceSettings(BaseModel):
    detect_max_side: int = Field(
        640, description="Photos are downscaled to this longest side for HOG detection."
    )
    min_face_px: int = Field(48, description="Smallest accepted face width in the photo, pixels.")
    upsample: int = Field(1, ge=0, le=2, description="HOG detector upsampling passes on the downscaled copy.")
    crop_size: int = Field(256, description="Side of the aligned face crop, pixels.")
    same_person_threshold: float = Field(
        0.92,
        description="Cosine similarity of L2-normalised dlib descriptors above which two faces are one person"
        " (calibrated: unrelated faces reach 0.916, the same face resized/mirrored/JPEG'd stays above 0.98).",
    )
    arcface_pack: Path | None = Field(
        None,
        description="Directory of a mounted insightface model pack (e.g. /models/insightface/buffalo_l)."
        " Set: identity embeddings and the quality report's similarity come from its ArcFace model (the"
        " .onnx with a 3x112x112 input, buffalo_l's w600k_r50.onnx) on onnxruntime, CUDA when available;"
        " faces are still found by dlib. None: dlib's 128-D descriptors. Never downloaded; a set directory"
        " without exactly one loadable recognition model stops the replica at start.",
    )
    arcface_same_person_threshold: float = Field(
        0.4,
        ge=-1.0,
        le=1.0,
        description="Cosine similarity of ArcFace embeddings above which two faces are one person, used"
        " instead of `same_person_threshold` when `arcface_pack` is set. ArcFace is trained so unrelated"
        " faces score near 0 (rarely above 0.3); 0.4 is insightface's own default recognition threshold,"
        " and keeps room for the pose, expression and lighting of a generated frame.",
    )


class GeneratorSettings(BaseModel):
    backend: Literal["preview", "wan-i2v", "wan-vace"] = Field(
        "preview",
        description="Default video backend (a request's `backend` overrides it): preview (CPU compositor, no"
        " weights), wan-i2v (Wan image-to-video from the composed first frame) or wan-vace (Wan VACE: the two"
        " face crops as references, the plan as a pose control video).",
    )
    crf: int = Field(20, ge=0, le=51, description="x264 constant rate factor for the MP4.")
    preset: str = Field("veryfast", description="x264 preset.")
    quality_frames: int = Field(
        8, ge=2, le=64, description="Frames the quality report checks: evenly spaced, plus the contact frame."
    )
    lighting_strength: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="Share of the gap in skin colour and exposure between the two photos that harmonisation"
        " closes: 0 leaves both as shot, 1 gives both the same skin statistics (and so erases real skin-tone"
        " differences; half is the default).",
    )
    camera_push_in: float = Field(
        0.08,
        ge=0.0,
        le=0.25,
        description="The preview's slow camera push-in toward the point where the lips meet: the zoom gained"
        " by the end of the hold (0.08: 8 % closer), eased from the whole scene on the first frame; 0 keeps"
        " the camera still. The plan's landmarks (quality report, pose video) include it.",
    )
    # Diffusion backends (kiss_core.generation.backends.wan). Weights are never downloaded: read from here.
    model_root: Path = Field(
        Path("/models"),
        description="Model directory: wan-i2v/ and wan-vace/ (each a diffusers pipeline directory as"
        " written by save_pretrained) and loras/ (<name>.safetensors + <name>.yaml). A backend whose"
        " directory is absent is not loaded; one that is present but incomplete stops the replica at start.",
    )
    enabled: list[Literal["wan-i2v", "wan-vace"]] | None = Field(
        None,
        description="Diffusion backends this replica loads; None: each one whose directory exists under"
        " model_root. A listed backend without a complete directory is a startup error.",
    )
    steps: int = Field(40, ge=1, le=200, description="Denoising steps of the standard quality.")
    guidance_scale: float = Field(
        5.0,
        ge=1.0,
        le=20.0,
        description="Classifier-free guidance scale of the standard quality (1: no CFG).",
    )
    guidance_scale_2: float | None = Field(
        None,
        ge=1.0,
        le=20.0,
        description="Classifier-free guidance scale of the low-noise expert (transformer_2) of a two-expert"
        " model (Wan2.2 A14B; diffusers' `guidance_scale_2`), standard quality; None: `guidance_scale`."
        " Models with one transformer have no second expert and ignore it.",
    )
    flow_shift: float | None = Field(
        None,
        gt=0.0,
        le=20.0,
        description="Shift of the flow-matching noise schedule (the scheduler's `shift`/`flow_shift`) of the"
        " standard quality; None: what the model directory's scheduler_config.json sets. diffusers' Wan"
        " examples use 3.0 at 480p and 5.0 at 720p.",
    )
    fast_flow_shift: float | None = Field(
        None,
        gt=0.0,
        le=20.0,
        description="Flow shift of the fast (step-distilled) quality, which distillation LoRAs state with"
        " their weights; None: `flow_shift`.",
    )
    quality: Literal["standard", "fast"] = Field(
        "standard",
        description="Default quality when a request names none: standard, or fast (step-distilled).",
    )
    fast_steps: int = Field(
        4,
        ge=1,
        le=16,
        description="Denoising steps of the fast quality, without CFG; 4-8 for step-distilled weights or"
        " LoRAs.",
    )
    fast_lora: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Step-distillation LoRA (in loras/, `fast: true`) the fast quality activates on the"
        " backend it was made for; None, and on the other backend: the one installed for that backend's"
        " base, if any (else the base weights are taken as step-distilled).",
    )
    lora: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="LoRA (in loras/) used when a request names none, on the backend it was made for (the"
        " other backend runs without); None: no LoRA by default.",
    )
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto",
        description="Weights dtype of the transformers and the UMT5 text encoder; auto: bfloat16 on a GPU,"
        " float32 on CPU. The VAE and the CLIP image encoder always run in float32, and UMT5 never in float16"
        " (it overflows): float16 gives it bfloat16 (float32 on GPUs without bfloat16).",
    )
    device: str | None = Field(
        None, description="torch device of the models; None: cuda when available, else cpu."
    )
    prompt_cache_size: int = Field(
        64,
        ge=0,
        le=4096,
        description="Prompt embeddings kept by each IdentityEncoder replica (LRU); 0: no cache.",
    )
    max_sequence_length: int = Field(512, ge=16, le=512, description="UMT5 tokens per prompt (Wan uses 512).")
    vace_conditioning_scale: float = Field(
        1.0, ge=0.0, le=2.0, description="Weight of the pose control video in wan-vace."
    )
    # Frame rate and length of the diffusion backends (kiss_core.generation.budget checks them before 202).
    native_fps: int = Field(
        16,
        ge=4,
        le=60,
        description="Frame rate the diffusion backends generate at (Wan 2.1/2.2 are trained at 16 fps); the"
        " requested fps is delivered by optical-flow frame interpolation (kiss_core.media.interpolate).",
    )
    max_frames: int = Field(
        81,
        ge=5,
        le=241,
        description="Frames a diffusion backend generates in one window (4k+1; Wan 2.1/2.2: 81, i.e. 5 s at"
        " 16 fps). A clip needing more is refused before acceptance with `clip_too_long`.",
    )
    max_tokens: int = Field(
        75_600,
        ge=1,
        description="Transformer tokens one request may take: latent frames ((frames-1)/4+1) x (height/16) x"
        " (width/16), plus on wan-vace one latent frame per photo (every face crop is a reference image in"
        " front of the video). 75,600 is 1280x720 at 81 frames (82,800 on wan-vace with one photo of each"
        " person); 832x480 at 81 frames is 32,760, on wan-vace with three photos of each person 42,120."
        " Beyond it a request is refused before acceptance with `token_budget_exceeded` (memory and time"
        " grow with it).",
    )
    encoder_memory_fraction: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Cap on the GPU memory an IdentityEncoder replica may take (it shares the GPU); None:"
        " no cap.",
    )
    backends_per_replica: Literal["one", "all"] = Field(
        "one",
        description="one: each diffusion backend gets its own VideoGenerator deployment (VideoGenerator for"
        " the default backend, VideoGenerator-<backend> for the others) and requests are routed to the one"
        " holding theirs: two 14B models do not fit one 80 GB GPU. all: one deployment loads every backend.",
    )
    offload: Literal["none", "model", "group"] = Field(
        "none",
        description="Opt-in CPU offload of the VideoGenerator for cards its weights do not fit (slower):"
        " model keeps one component on the GPU at a time (the two A14B experts take turns), group streams the"
        " transformer blocks from host memory (least GPU memory, slowest). Weights then load to the host"
        " first, and the start-up memory check is skipped for the generator.",
    )
    gpu_memory_gib: float | None = Field(
        None,
        gt=0,
        description="GPU memory of one replica's device, GiB; None: read from the CUDA device (no check on a"
        " CPU). At start each GPU replica computes its weights from the model configs (meta device) and"
        " refuses, with the numbers, a layout that does not fit this times its memory fraction.",
    )
    gpu_reserve_gib: float = Field(
        0.0,
        ge=0,
        description="GPU memory the start-up check keeps free for activations on top of the weights, GiB"
        " (bench/gpu_check.py measures a request's peak).",
    )
    share_text_encoder: bool = Field(
        True,
        description="The IdentityEncoder loads one UMT5 for every backend whose text_encoder/ and tokenizer/"
        " are the same files (config, names and sizes; the Wan 2.1/2.2 backends ship the same umt5-xxl).",
    )
    gpu_memory_fraction: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="Cap on the GPU memory a VideoGenerator replica may take (torch's per-process memory"
        " fraction); None: no cap. The single-gpu profile sets 0.72, next to encoder_memory_fraction 0.22.",
    )
    # Speed levers of the VideoGenerator (bench/gpu_denoise.py measures them side by side on a GPU).
    attention_backend: (
        Literal[
            "native",
            "_native_cudnn",
            "_native_flash",
            "_native_efficient",
            "flash",
            "_flash_3",
            "sage",
            "flex",
        ]
        | None
    ) = Field(
        None,
        description="diffusers attention backend of the transformer(s); None: diffusers' default (native"
        " SDPA). Only locally installed kernels: the *_hub backends download code and are not offered.",
    )
    compile_blocks: bool = Field(
        False,
        description="torch.compile the transformer's repeated blocks (compile_repeated_blocks) at start;"
        " the first video pays the compile time. Only where the LoRA set is fixed (no LoRAs for the"
        " backend, or `fuse_lora`): LoRAs switched per request would recompile for every adapter set, so"
        " there the backend runs uncompiled and logs why.",
    )
    compile_backend: Literal["inductor", "cudagraphs", "aot_eager", "eager"] = Field(
        "inductor",
        description="torch.compile backend of `compile_blocks`: inductor (fused kernels: the fast one),"
        " cudagraphs, or aot_eager/eager, which only trace (to find graph breaks and recompilations).",
    )
    vae_tiling: bool = Field(
        False,
        description="Decode the video latents tile by tile: less GPU memory at large sizes, a bit slower.",
    )
    cfg_batched: bool = Field(
        False,
        description="Classifier-free guidance as one batch-2 transformer forward per step instead of two"
        " forwards: the same result, twice the activation memory of one forward.",
    )
    step_cache_threshold: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="First-block cache (diffusers FirstBlockCacheConfig): at a step whose first transformer"
        " block output changed by less than this (mean absolute change relative to the last fully computed"
        " step), the other blocks are skipped and their last residual reused. Higher is faster and blurrier;"
        " ParaAttention suggests 0.05-0.1 for Wan. None: every step runs every block.",
    )
    fuse_lora: bool = Field(
        False,
        description="Fuse the default `lora` into the transformer weights at start and drop the LoRA layers:"
        " no LoRA cost per step, but the backend then runs only that LoRA (requests naming another, or the"
        " fast quality with a distillation LoRA, are refused as unavailable).",
    )
    lip_attention_bias: float = Field(
        0.0,
        ge=0.0,
        le=8.0,
        description="Added to every self-attention logit on the lip tokens (from the plan's landmarks) in the"
        " Wan backends, so more of each token's attention goes to the mouths; 0 = off, bit-identical output"
        " (no processor is installed). Needs an attention backend that takes an additive mask: the default"
        " SDPA (`attention_backend` None, native, _native_cudnn or _native_efficient).",
    )
    progress_preview_every_steps: int = Field(
        4,
        ge=0,
        description="Every this many denoising steps a diffusion backend projects the current latent's"
        " middle frame to RGB (a linear map fitted from the backend's VAE when it loads; no VAE decode) and"
        " stores it as the job's low-resolution"
        " progress preview (`?variant=progress`); 0: no previews.",
    )

    @model_validator(mode="after")
    def _fused_lora_is_named(self) -> GeneratorSettings:
        if self.fuse_lora and self.lora is None:
            raise ValueError("`fuse_lora` needs `lora`: the LoRA to fuse into the weights")
        return self

    @model_validator(mode="after")
    def _lip_bias_has_an_additive_mask(self) -> GeneratorSettings:
        if self.lip_attention_bias > 0 and self.attention_backend not in (
            None,
            "native",
            "_native_cudnn",
            "_native_efficient",
        ):
            raise ValueError(
                f"`lip_attention_bias` needs an attention backend that adds a float mask to the logits (None,"
                f" native, _native_cudnn, _native_efficient); {self.attention_backend!r} refuses a mask or"
                " reads it as a boolean one"
            )
        return self

    @model_validator(mode="after")
    def _max_frames_is_4k_plus_1(self) -> GeneratorSettings:
        if (self.max_frames - 1) % 4:
            raise ValueError(
                f"`max_frames` must be 4k+1 (the Wan VAE compresses time by 4) but is {self.max_frames}"
            )
        return self


class JobSettings(BaseModel):
    max_attempts: int = Field(3, ge=1, le=10, description="Attempts per job before it fails for good.")
    lease_s: float = Field(
        30.0, gt=0, description="A running job's lease; renewed every third of it, taken over once expired."
    )
    recovery_interval_s: float = Field(
        10.0, gt=0, description="How often each ingress replica looks for jobs whose runner died."
    )
    placement_timeout_s: float = Field(
        600.0,
        gt=0,
        description="A job waiting on a stage (FaceAnalyzer, IdentityEncoder, VideoGenerator) that has had no"
        " running replica this long fails with stage_unavailable and Serve's reason (e.g. no node offers"
        " its GPUs), instead of waiting for ever. Long enough for the cluster to add a GPU node.",
    )


class RetentionSettings(BaseModel):
    inputs_hours: float = Field(
        24.0, gt=0, description="Uploaded photos are erased this long after the request."
    )
    outputs_days: float = Field(
        7.0, gt=0, description="Videos, stills and manifests are erased this long after."
    )
    sweep_interval_s: float = Field(600.0, gt=0, description="How often each ingress replica runs the sweep.")
    lifecycle_rules: bool = Field(True, description="Also install matching S3 lifecycle rules on the bucket.")


class AgeGateSettings(BaseModel):
    enabled: bool = Field(
        True, description="Estimate every subject's age and refuse possible minors. Keep on in production."
    )
    min_age: float = Field(
        25.0,
        ge=18.0,
        le=80.0,
        description="Subjects estimated younger than this are refused (subject_may_be_minor). 18 plus a"
        " safety margin: the estimator's error is several years (single faces vary by ~4 years with a"
        " 1-pixel landmark shift), so the default is 25.",
    )
    mirror: bool = Field(
        True, description="Average the estimate over the face chip and its mirror image (steadier estimate)."
    )


class ContentFilterSettings(BaseModel):
    enabled: bool = Field(True, description="Refuse explicit input photos. Keep on in production.")
    threshold: float = Field(
        0.5,
        gt=0.0,
        lt=1.0,
        description="A photo is explicit when an exposed class (genitalia, female breast, anus, buttocks)"
        " scores over this; lower refuses more.",
    )


class OutputCheckSettings(BaseModel):
    enabled: bool = Field(
        True,
        description="Check sampled frames of every generated video (every backend, the preview included)"
        " before anything is stored: content filter on each frame, age estimate on each full face. A"
        " violation fails the job with output_blocked and stores nothing. Keep on in production.",
    )
    frames: int = Field(
        8,
        ge=1,
        le=64,
        description="Frames checked: this many evenly spaced from first to last, plus the contact frame (the"
        " frames the quality report samples when equal to generator.quality_frames: no extra decode).",
    )
    content_threshold: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="A frame is explicit when an exposed class scores over this; None:"
        " safety.content_filter.threshold (the photos' threshold).",
    )
    age: bool = Field(
        True,
        description="Estimate the age of every full face detected in the checked frames: the video is blocked"
        " when a person's median estimate is under safety.age_gate.min_age less `age_tolerance`, a single"
        " face reads under 18, or a face nobody planned reads under that same threshold (faces touching the"
        " other person's are not read: the estimate is unreliable there).",
    )
    age_tolerance: float = Field(
        2.0,
        ge=0.0,
        le=7.0,
        description="Years under safety.age_gate.min_age that a person's median on generated frames may read:"
        " the photos were held at min_age itself, and the age model reads the same admitted adult lower on"
        " rendered frames (smaller, re-sampled faces: medians down to 24.7 against photos read 26.7-29.8 on"
        " the synthetic pairs, docs/responsible-use.md). 0 holds the frames to the photos' threshold.",
    )


class SafetySettings(BaseModel):
    """Checks that run inside the pipeline, on by default."""

    age_gate: AgeGateSettings = Field(
        default_factory=AgeGateSettings,
        description="Age gate: every subject's age is estimated from the aligned face and possible minors are"
        " refused (FaceAnalyzer, before the 202).",
    )
    content_filter: ContentFilterSettings = Field(
        default_factory=ContentFilterSettings,
        description="Content filter: NudeNet's detector on both input photos; explicit photos are refused"
        " (FaceAnalyzer, before the 202).",
    )
    output_check: OutputCheckSettings = Field(
        default_factory=OutputCheckSettings,
        description="Output check: sampled frames of each generated video go through the content filter and"
        " the age estimate before anything is stored (VideoGenerator); a violation fails the job with"
        " output_blocked, stores no output and writes a record under blocked/.",
    )


TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ApiKeyRecord(BaseModel):
    """One API key as configured: its SHA-256 (never the key itself), its tenant and its limits.

    `kissgen keys new --tenant NAME` prints a new key once together with this record.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str = Field(
        pattern=TENANT_PATTERN,
        description="Who owns what this key creates; jobs, lists and content are scoped to it.",
    )
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the key.")
    name: str = Field("", max_length=100, description="A label for operators (who holds the key).")
    rate_per_minute: float | None = Field(
        None, gt=0, description="Requests per minute for this key; None: access.rate_per_minute."
    )
    burst: int | None = Field(None, ge=1, description="Token-bucket size for this key; None: access.burst.")
    max_concurrent_jobs: int | None = Field(
        None, ge=1, description="Queued + running jobs of the tenant; None: access.max_concurrent_jobs."
    )
    webhook_secret: str | None = Field(
        None,
        pattern=r"^whsec_[A-Za-z0-9+/=]{16,}$",
        description="Standard Webhooks signing secret (whsec_ + base64) for the tenant's webhooks;"
        " None: webhooks.secret.",
    )


class AccessSettings(BaseModel):
    """API keys, tenants and per-key limits. No keys and `required: false` is open mode (tenant public)."""

    required: bool = Field(
        False,
        description="Refuse to start without at least one key (the production profile always requires keys).",
    )
    keys: list[ApiKeyRecord] = Field(default_factory=list, description="Keys given inline.")
    keys_file: Path | None = Field(
        None,
        description="A YAML or JSON file (a secret mount) with a list of key records; read at start and"
        " again when it changes (see reload_interval_s).",
    )
    reload_interval_s: float = Field(
        5.0,
        ge=0,
        description="How often at most a request checks whether keys_file changed (its stat; the content"
        " only when that changed), so keys added or revoked there apply within this time, without a"
        " restart. An invalid new file keeps the current keys (logged). 0: on every request.",
    )
    rate_per_minute: float = Field(120.0, gt=0, description="Default requests per minute per key.")
    burst: int = Field(20, ge=1, description="Default token-bucket size per key (requests at once).")
    max_concurrent_jobs: int = Field(4, ge=1, description="Default cap of a tenant's queued + running jobs.")
    ingress_replicas: int = Field(
        1,
        ge=1,
        description="The rate limiter lives in each ingress replica, so N replicas allow N x the rate;"
        " each replica divides the configured rate by this number.",
    )


class WebhookSettings(BaseModel):
    """Outgoing webhooks (`webhook_url` on POST /v1/videos), signed per Standard Webhooks."""

    secret: str | None = Field(
        None,
        pattern=r"^whsec_[A-Za-z0-9+/=]{16,}$",
        description="Signing secret (whsec_ + base64) for tenants whose key record has none.",
    )
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts (names or IP literals) a webhook may reach even on loopback/private addresses;"
        " plain http is allowed only for allow-listed hosts.",
    )
    allow_networks: list[str] = Field(
        default_factory=list, description="CIDR networks a webhook may reach even when not public."
    )
    max_attempts: int = Field(5, ge=1, le=20, description="Delivery attempts per event.")
    backoff_s: float = Field(
        1.0, gt=0, description="Delay before the second attempt; doubles each time (with +-20% jitter)."
    )
    timeout_s: float = Field(10.0, gt=0, description="Timeout of one delivery attempt.")
    public_base_url: str | None = Field(
        None, description="Base URL put in front of the event's links; None: links are paths."
    )


class LabelSettings(BaseModel):
    """The visible mark drawn on every frame and still (kiss_core.generation.provenance.label)."""

    enabled: bool = Field(True, description="Draw the mark. Keep on: viewers must be able to tell.")
    text: str = Field(
        "AI-generated",
        pattern=r"^[ -~]{1,40}$",
        description="The mark's text (printable ASCII: OpenCV's Hershey font has no other glyphs).",
    )
    position: Literal["top-left", "top-right", "bottom-left", "bottom-right"] = Field(
        "bottom-right", description="Corner the mark sits in."
    )
    opacity: float = Field(
        0.8, ge=0.0, le=1.0, description="Opacity of the text; its dark backing box gets 0.6 of this."
    )
    scale: float = Field(
        0.035, gt=0.0, le=0.2, description="Height of the text's capitals as a share of the frame height."
    )
    margin: float = Field(
        0.025, ge=0.0, le=0.2, description="Gap between the mark and the frame's edges, share of its height."
    )


class WatermarkSettings(BaseModel):
    """The invisible watermark carrying the job id (kiss_core.generation.provenance.watermark)."""

    enabled: bool = Field(True, description="Watermark every frame and still with the job id.")
    strength: float = Field(
        2.5,
        ge=0.5,
        le=8.0,
        description="Grey levels each 8x8 cell is shifted by: 2.5 gives ~40 dB PSNR and still reads after"
        " re-encoding at crf 35; lower is less visible and less robust.",
    )


class C2paSettings(BaseModel):
    """Content Credentials: a signed C2PA manifest in every MP4 and still (provenance.credentials)."""

    required: bool = Field(
        False,
        description="Refuse to start without a readable certificate and key (the production profile sets"
        " this; without it, and without cert/key, outputs carry no manifest).",
    )
    cert_chain: Path | None = Field(
        None,
        description="PEM file: the operator's signing certificate first, then its intermediates (not the"
        " root). C2PA validators refuse self-signed signing certificates.",
    )
    private_key: Path | None = Field(None, description="PEM file: the signing certificate's private key.")
    alg: Literal["es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"] = Field(
        "es256", description="Signature algorithm; must match the key (es256: EC P-256, ps256: RSA)."
    )
    tsa_url: str | None = Field(
        None,
        description="RFC 3161 time-stamp authority URL (signing then calls it over the network); None: no"
        " time stamp, so validators check the certificate against the current time.",
    )
    trust_anchors: Path | None = Field(
        None,
        description="PEM file of extra root certificates that verification trusts (e.g. the operator's own"
        " CA); without it a valid manifest from a CA outside the C2PA trust list reads as untrusted.",
    )
    thumbnail: bool = Field(
        False, description="Embed a thumbnail in stills' manifests (~20 kB; the still is its own preview)."
    )
    dev_certificate: bool = Field(
        False,
        description="Without cert_chain and private_key, sign with a development certificate made on first"
        ' start under {storage.local_root}/dev-c2pa/ and reused (a CA and leaf named "kissgen development CA'
        ' (not trusted)"): outputs carry a manifest that validates but is never trusted. The local profile'
        " turns this on; the production and single-gpu profiles refuse it and need the operator's own.",
    )


class ProvenanceSettings(BaseModel):
    """Labelling of generated media: visible mark, invisible watermark, signed C2PA manifest."""

    label: LabelSettings = Field(
        default_factory=LabelSettings,
        description='The visible "AI-generated" mark drawn on every frame and still.',
    )
    watermark: WatermarkSettings = Field(
        default_factory=WatermarkSettings,
        description="The invisible watermark carrying the job id in every frame and still.",
    )
    c2pa: C2paSettings = Field(
        default_factory=C2paSettings,
        description="Content Credentials: a C2PA manifest signed with the operator's certificate in every MP4"
        " and still.",
    )


class EventSettings(BaseModel):
    """The live progress stream GET /v1/videos/{id}/events (Server-Sent Events) of each ingress replica."""

    poll_interval_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="How often a replica reads the manifest of each job that has open streams (one read per"
        " job however many streams watch it) and refreshes the queue positions and ETAs it serves.",
    )
    heartbeat_s: float = Field(
        15.0,
        gt=0,
        le=300,
        description="A `: hb` comment line goes out after this many seconds without an event, so proxies"
        " and clients see the stream is alive.",
    )
    max_stream_s: float = Field(
        90.0,
        gt=0,
        description="The server ends a stream after this long with a `retry:` line and the client reconnects"
        " with Last-Event-ID. Keep it below Serve's http_options.request_timeout_s (which would cut the"
        " stream without a goodbye) and the load balancer's read timeout.",
    )
    max_streams: int = Field(
        60,
        ge=1,
        description="Open streams per ingress replica; past it a new one gets 503 too_many_streams with"
        " Retry-After. Keep it below the Ingress's max_ongoing_requests (a stream is an ongoing request"
        " for all its life), so other requests still get through.",
    )
    retry_ms: int = Field(
        1000, ge=0, description="The reconnection delay sent in the `retry:` line when a stream is ended."
    )


class TracingSettings(BaseModel):
    service_name: str = Field("kissgen", description="OpenTelemetry service.name.")
    # The exporter itself is configured by the standard OTEL_EXPORTER_OTLP_* variables.


class Settings(BaseSettings):
    """The whole configuration. Every deployment builds this from the same environment."""

    model_config = SettingsConfigDict(env_prefix="KISS_", env_nested_delimiter="__", extra="ignore")

    storage: StorageSettings = Field(
        default_factory=StorageSettings,
        description="Object storage for inputs, manifests, outputs and audit records: a local directory or"
        " any S3 server.",
    )
    limits: LimitSettings = Field(
        default_factory=LimitSettings,
        description="Input limits (photo and request sizes) and the admission limit of each ingress replica.",
    )
    faces: FaceSettings = Field(
        default_factory=FaceSettings,
        description="Face detection (dlib HOG), the aligned crop, and identity embeddings and thresholds.",
    )
    generator: GeneratorSettings = Field(
        default_factory=GeneratorSettings,
        description="Video generation: backend, encoding, quality report, lighting, and the diffusion"
        " backends' weights, LoRAs and speed levers.",
    )
    tracing: TracingSettings = Field(
        default_factory=TracingSettings,
        description="OpenTelemetry identity of the service; the exporter is set by the standard OTEL_*"
        " variables.",
    )
    retention: RetentionSettings = Field(
        default_factory=RetentionSettings,
        description="How long photos and outputs are kept: a sweep by every ingress replica plus S3"
        " lifecycle rules.",
    )
    jobs: JobSettings = Field(
        default_factory=JobSettings,
        description="Running jobs: attempts, the runner's lease, and recovery of jobs whose runner died.",
    )
    safety: SafetySettings = Field(
        default_factory=SafetySettings,
        description="Checks on the input photos, on by default; the production profile refuses to start"
        " with either off.",
    )
    access: AccessSettings = Field(
        default_factory=AccessSettings,
        description="API keys, tenants and per-key limits. No keys and `required: false` is open mode"
        " (every request is tenant public).",
    )
    webhooks: WebhookSettings = Field(
        default_factory=WebhookSettings,
        description="Outgoing webhooks (`webhook_url` on POST /v1/videos), signed per Standard Webhooks.",
    )
    events: EventSettings = Field(
        default_factory=EventSettings,
        description="The live progress stream (Server-Sent Events): polling, heartbeats, stream length and"
        " the bound on open streams per ingress replica.",
    )
    provenance: ProvenanceSettings = Field(
        default_factory=ProvenanceSettings,
        description="Labelling of every output as AI-generated: visible mark, invisible watermark, signed"
        " C2PA manifest.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlSource(settings_cls), file_secret_settings)


class _YamlSource(PydanticBaseSettingsSource):
    """Reads the YAML file named by KISS_CONFIG_FILE (the one place that variable is read)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = os.environ.get("KISS_CONFIG_FILE")
        if not path:
            return {}
        import yaml

        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f) or {}


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
