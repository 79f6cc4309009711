"""Contracts that cross a process or HTTP boundary: request parameters, analyses, results, the job.

Cheap to import (pydantic only) so the ingress can load it without NumPy-heavy stages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kiss_core.safety.prompt import check_prompt

Subject = Literal["a", "b"]
SUBJECTS: tuple[Subject, Subject] = ("a", "b")
# One photo of a subject, or several of the same person (kiss_core.faces.subject_photos).
SubjectPhotos = bytes | Sequence[bytes]
Style = Literal["peck", "romantic", "french", "cheek"]
Background = Literal["auto", "a", "b", "blur"]  # the scene (kiss_core.scene.background)
OutputKind = Literal["video", "image"]
JobStatus = Literal["queued", "in_progress", "completed", "failed", "canceled"]
Stage = Literal["queued", "analysis", "identity", "generation", "quality", "storing", "done"]
Variant = Literal["video", "thumbnail", "image", "progress"]
TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "canceled"})

_SIZE_RE = re.compile(r"^(\d{2,4})x(\d{2,4})$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def photo_list(photos: SubjectPhotos) -> list[bytes]:
    """A subject's photos as a list, in the order sent: one photo is given as its bytes, several as a
    sequence of them."""
    return [bytes(photos)] if isinstance(photos, bytes | bytearray | memoryview) else list(photos)


class VideoParams(BaseModel):
    """What the client asks for, besides the two photos."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    style: Style = Field("romantic", description="Choreography: peck, romantic, french or cheek.")
    intensity: float = Field(
        0.5, ge=0.0, le=1.0, description="0 = restrained, 1 = as much as the style allows."
    )
    seconds: float = Field(5.0, ge=1.0, le=10.0, description="Clip length in seconds.")
    size: str = Field("832x480", description="Frame size WIDTHxHEIGHT; both divisible by 16, 128..1280.")
    fps: int = Field(24, ge=8, le=30, description="Frames per second.")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed for everything random in the generation.")
    background: Background = Field(
        "auto",
        description="The scene: a or b (that photo's own background, its people removed), blur (a neutral"
        " blur of both backgrounds), auto (the photo with more background, else blur).",
    )
    output: OutputKind = Field(
        "video", description="video: an MP4 (plus thumbnail and still); image: the still."
    )
    prompt: str = Field(
        "",
        description="Optional scene description (<= 300 characters) inserted into the model prompt's"
        " template; terms on the service's disallowed list are refused. The preview backend does not use it.",
    )
    backend: Literal["preview", "wan-i2v", "wan-vace"] | None = Field(
        None,
        description="Video backend: preview (CPU compositor), wan-i2v (Wan image-to-video) or wan-vace (Wan"
        " VACE with the face references and a pose video); None: the service's default. A backend the service"
        " has not loaded fails the job with backend_unavailable.",
    )
    quality: Literal["standard", "fast"] | None = Field(
        None,
        description="Diffusion quality: standard (full steps with guidance) or fast (4-8 step-distilled"
        " steps, no guidance); None: the service's default. The preview backend ignores it.",
    )
    lora: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Name of a LoRA installed for the diffusion backend (its trigger words are added to the"
        " prompt); `none`: no LoRA even if the service has a default; None: the service's default.",
    )

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, prompt: str) -> str:
        return check_prompt(prompt)

    @field_validator("size")
    @classmethod
    def _check_size(cls, size: str) -> str:
        match = _SIZE_RE.match(size)
        if match is None:
            raise ValueError(f"`size` must look like 832x480 but is {size!r}")
        width, height = int(match[1]), int(match[2])
        for name, value in (("width", width), ("height", height)):
            if value % 16 or not 128 <= value <= 1280:
                raise ValueError(f"`size` {name} has to be divisible by 16 and in 128..1280 but is {value}")
        return size

    @property
    def width(self) -> int:
        return int(self.size.split("x")[0])

    @property
    def height(self) -> int:
        return int(self.size.split("x")[1])

    @property
    def frame_count(self) -> int:
        return max(1, round(self.seconds * self.fps))


class SubjectConsent(BaseModel):
    """The client's attestation for one person in the request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    consented: bool = Field(description="The person is an adult and consented to this video being made.")
    reference: str | None = Field(
        None, max_length=200, description="The operator's own reference to the consent record, if any."
    )


class Attestation(BaseModel):
    """Consent per subject. A request without both attestations is refused (consent_required)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    a: SubjectConsent
    b: SubjectConsent

    def of(self, subject: str) -> SubjectConsent:
        return self.a if subject == "a" else self.b


class AuditRecord(BaseModel):
    """What is kept of every accepted request, also after the job is erased: no photos, only hashes."""

    request_id: str
    job_id: str
    tenant: str
    received_at: datetime
    policy_version: str
    photo_sha256: dict[str, str] = Field(
        description="SHA-256 of the photo each subject's video was composed from (the best one of several)."
    )
    photos_sha256: dict[str, list[str]] = Field(
        default_factory=dict,
        description="SHA-256 of every photo of each subject, in the order sent (empty in records written"
        " before requests could carry several photos; photo_sha256 then holds the only one).",
    )
    consent: Attestation
    age_estimates: dict[str, float | None] = Field(default_factory=dict)


class ConsentReference(BaseModel):
    """Which audit record attests the consent behind a job: what its Content Credentials assert
    (com.kissgen.consent). Only the record's random id and the policy version, no personal data."""

    model_config = ConfigDict(frozen=True)

    audit_record: str = Field(description="The audit record's request id (req_…), written at admission.")
    policy_version: str = Field(description="The consent policy the attestation was made under.")


class Pose(BaseModel):
    """Head pose in degrees. Yaw > 0: the face turns towards the image's right side."""

    yaw: float
    pitch: float
    roll: float


class FaceQuality(BaseModel):
    face_width_px: float = Field(description="Width of the face box in the oriented photo, pixels.")
    interocular_px: float = Field(description="Distance between the eye centres, pixels.")
    blur: float = Field(description="Variance of the Laplacian on the aligned crop; low = blurry.")
    brightness: float = Field(description="Mean luma of the face region, 0..255.")
    clipped: float = Field(description="Share of face pixels at 0 or 255 (over/under-exposure), 0..1.")
    frontalness: float = Field(description="1 = looking straight at the camera, 0 = profile.")


class SubjectSummary(BaseModel):
    """What a client sees of a subject's analysis: where the face is and how it was judged. Never the
    identity embedding: it is biometric data (GDPR Art. 9), no client needs it, and it stays inside the
    service (in the job's manifest, erased with the job)."""

    subject: Subject
    image_width: int
    image_height: int
    faces_found: int = Field(description="How many faces the detector found; the largest one is used.")
    box: tuple[float, float, float, float] = Field(description="x0, y0, x1, y1 in the oriented photo.")
    landmarks: list[tuple[float, float]] = Field(
        description="68 iBUG landmarks (x, y) in the oriented photo."
    )
    pose: Pose
    quality: FaceQuality
    age_estimate: float | None = Field(None, description="Estimated age in years, when the age gate ran.")


class SubjectAnalysis(SubjectSummary):
    """What face analysis found in one subject's photo, as the stages pass it on. Small: no pixels."""

    embedding: list[float] = Field(description="128-D dlib identity descriptor of the face (internal).")


class SubjectQuality(BaseModel):
    subject: Subject
    similarity_min: float | None = Field(
        description="Lowest similarity to the reference over checked frames."
    )
    similarity_mean: float | None = Field(description="Mean similarity to the reference over checked frames.")
    frames_found: int = Field(description="Checked frames in which this person's face was found.")
    frames_checked: int
    visible_share: float = Field(0.0, description="frames_found / frames_checked, 0..1.")


class ContactQuality(BaseModel):
    """Did the lips meet? Measured on the output frames, not taken from the plan."""

    frame: int = Field(description="Frame index where contact was measured.")
    target: Literal["lips", "cheek"] = Field(
        "lips", description="Where a's mouth should touch b: b's lips, or b's near cheek (style cheek)."
    )
    mouth_distance: float | None = Field(
        description="Distance from a's mouth centre to the target on b (b's mouth centre, or the centre of"
        " b's near cheek) / mean face width; None when not measurable."
    )
    seam: float | None = Field(
        None,
        description="Mean luma gradient (|Sobel|) on the band where the two faces' landmark hulls meet /"
        " mean inside the faces, at this frame; about 1-1.7 seamless (a face's outline is an edge too), a"
        " hard cut raises it; None when the faces do not meet or a face is not located.",
    )


class FlickerQuality(BaseModel):
    """Temporal stability of regions that should not change (away from both faces)."""

    mean: float = Field(description="Mean absolute luma change between consecutive frames, 0..255.")
    p95: float = Field(description="95th percentile of the per-frame-pair change, 0..255.")
    frames: int = Field(description="Frames compared.")


class LightingQuality(BaseModel):
    """Difference in skin tone between the two people (CIE76 delta E of the mean skin Lab colour)."""

    delta_e_input: float | None = Field(None, description="Between the two input photos.")
    delta_e_output: float | None = Field(None, description="Between the two people in the first frame.")


class QualityReport(BaseModel):
    similarity: str = Field("cosine of dlib 128-D descriptors", description="How similarity is measured.")
    threshold: float = Field(description="Similarity above which two faces count as the same person.")
    subjects: list[SubjectQuality]
    both_found: float | None = Field(
        None,
        description="Share of the checked frames in which both people's faces were found, 0..1 "
        "(None: not two subjects).",
    )
    contact: ContactQuality | None = None
    flicker: FlickerQuality | None = None
    lighting: LightingQuality | None = None


class Provenance(BaseModel):
    """How this job's outputs say they are AI-generated (kiss_core.generation.provenance)."""

    label: bool = Field(False, description="A visible 'AI-generated' mark on every frame.")
    watermark: bool = Field(False, description="The job id as an invisible watermark in every frame.")
    c2pa: bool = Field(False, description="A signed C2PA manifest in the MP4, the still and the thumbnail.")


class JobResult(BaseModel):
    output: OutputKind
    width: int
    height: int
    fps: int
    frames: int
    seconds: float
    contact_frame: int
    keys: dict[str, str] = Field(description="Object keys of the stored variants (video, thumbnail, image).")
    quality: QualityReport
    timings: dict[str, float] = Field(default_factory=dict, description="Seconds spent per stage.")
    provenance: Provenance = Field(default_factory=Provenance, description="How the outputs are marked.")


class Problem(BaseModel):
    """RFC 9457 problem details, with our stable `code` and the `subject` it concerns."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    code: str
    subject: Subject | None = None


class WebhookDelivery(BaseModel):
    """What became of the job's webhook event (kiss_core.jobs.webhooks): shown on GET /v1/videos/{id}."""

    event: str = Field(description="video.completed or video.failed.")
    message_id: str = Field(description="The `webhook-id` sent (the same on every attempt).")
    status: Literal["pending", "delivered", "failed", "refused"] = Field(
        description="pending: retries left; refused: the URL no longer passes the address checks."
    )
    attempts: int = 0
    last_status_code: int | None = Field(None, description="HTTP status of the last attempt, if any.")
    last_error: str | None = Field(None, description="Why the last attempt failed, when it had no answer.")
    updated_at: datetime | None = None


class ProgressPreview(BaseModel):
    """A low-resolution JPEG of the frame being denoised, refreshed every few steps while generating."""

    url: str = Field(description="Where to fetch it: /v1/videos/{id}/content?variant=progress.")
    revision: int = Field(description="The job revision that wrote it (changes with every new preview).")


class VideoJob(BaseModel):
    """The job as the API shows it."""

    id: str
    object: Literal["video"] = "video"
    status: JobStatus = "queued"
    stage: Stage = "queued"
    progress: int = Field(0, ge=0, le=100, description="Percent done.")
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None = None
    params: VideoParams
    subjects: Sequence[SubjectSummary] = Field(default_factory=list)
    error: Problem | None = None
    result: JobResult | None = None
    webhook: WebhookDelivery | None = Field(
        None, description="Delivery of the webhook, if one was asked for."
    )
    revision: int = Field(
        0, ge=0, description="+1 on every write of the job's record (1 when created); the SSE event id."
    )
    queue_position: int | None = Field(
        None,
        ge=1,
        description="While the job waits for a generator slot: its place in the queue (1 = next); null"
        " while it generates and once it ended. Computed when the job is read, never stored.",
    )
    eta_s: float | None = Field(
        None,
        ge=0,
        description="Estimated seconds until the job completes; null while unknown (before the service"
        " has seen a job of this backend complete) and once it ended. Computed when read, never stored.",
    )
    progress_preview: ProgressPreview | None = Field(
        None, description="The latest low-resolution preview of the frame being denoised (diffusion only)."
    )


class Lease(BaseModel):
    """Who runs a job and until when; kept beside the manifest so heartbeats never rewrite it."""

    owner: str
    until: datetime
    handed_back: int | None = Field(
        None,
        description="The attempt its owner gave back on shutdown: the runner that takes the job over runs"
        " it again under that number, whatever a late write of the stopped attempt left in the manifest.",
    )


class JobManifest(VideoJob):
    """The durable record of a job in object storage: the API view plus what is needed to (re)run it."""

    subjects: Sequence[SubjectAnalysis] = Field(default_factory=list)  # with the embeddings: internal
    input_keys: dict[str, str] = Field(
        description="Object keys of the stored input photos per subject: the photo the scene is composed from"
        " (the best one when the subject has several)."
    )
    reference_keys: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Object keys of each subject's other photos, in the order sent (absent: one photo). They"
        " add to the identity reference (the mean embedding) and are VACE reference images.",
    )
    reference_analyses: dict[str, list[SubjectAnalysis]] = Field(
        default_factory=dict,
        description="The face analysis of each photo in `reference_keys`, in the same order.",
    )
    attempts: int = 0
    trace_context: dict[str, str] = Field(default_factory=dict, description="W3C trace context of the job.")
    tenant: str = Field("public", description="The tenant (API key owner) the job belongs to.")
    webhook_url: str | None = Field(None, description="Where the terminal event is delivered, if anywhere.")
    index_key: str | None = Field(None, description="The job's marker in its tenant's listing (jobs.py).")
    queue_key: str | None = Field(None, description="The job's marker in the global queue index (keys.py).")
    tenant_slot: str | None = Field(
        None, description="The tenant's job-cap slot the job holds until it ends (kiss_core.jobs.slots)."
    )
    consent: ConsentReference | None = Field(
        None,
        description="The audit record of the job's consent attestation (None: a job accepted before manifests"
        " kept it).",
    )

    def public(self) -> dict[str, Any]:
        private = set(JobManifest.model_fields) - set(VideoJob.model_fields)
        return VideoJob.model_validate(self.model_dump(exclude=private)).model_dump(mode="json")


class StageRequest(BaseModel):
    """One attempt of a job as the identity and generation stages see it: everything they need to find
    the stored inputs and make the outputs, in one frozen object that crosses Ray's process boundaries.

    Only keys travel: the photos stay in object storage, the conditioning travels on its own.
    """

    model_config = ConfigDict(frozen=True)

    job_id: str
    params: VideoParams
    input_keys: dict[str, str] = Field(
        description="Object keys of the stored input photos per subject (the photos the scene is composed"
        " from)."
    )
    analyses: list[SubjectAnalysis] = Field(description="Face analysis of each subject, a then b.")
    reference_keys: dict[str, list[str]] = Field(
        default_factory=dict, description="Object keys of each subject's other photos (JobManifest's)."
    )
    reference_analyses: dict[str, list[SubjectAnalysis]] = Field(
        default_factory=dict, description="The analyses of the photos in `reference_keys`, in the same order."
    )
    trace: dict[str, str] = Field(default_factory=dict, description="W3C trace context of this attempt.")
    consent: ConsentReference | None = Field(
        None,
        description="The job's consent audit record, asserted in its C2PA manifest (None: no assertion).",
    )
    runner: str | None = Field(
        None,
        description="The runner (lease owner) of this attempt: the generator stops at its next progress"
        " report once the job's lease names another runner or was given back (None: never stops so).",
    )

    @classmethod
    def for_job(cls, manifest: JobManifest, trace: dict[str, str], runner: str | None = None) -> StageRequest:
        """The request for one attempt at `manifest`'s job, under the attempt's trace context."""
        return cls(
            job_id=manifest.id,
            params=manifest.params,
            input_keys=manifest.input_keys,
            analyses=list(manifest.subjects),
            reference_keys=manifest.reference_keys,
            reference_analyses=manifest.reference_analyses,
            trace=trace,
            consent=manifest.consent,
            runner=runner,
        )

    def by_subject(self) -> dict[str, SubjectAnalysis]:
        return {a.subject: a for a in self.analyses}
