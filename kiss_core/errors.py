"""The error taxonomy: one base, client errors with a stable code, server errors that say if a retry helps.

Client errors become RFC 9457 `application/problem+json` bodies (`to_problem`). They cross Ray process
boundaries by pickling, so every subclass keeps the `(detail, subject)` constructor of `ClientError`.
"""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://kissgen.dev/problems/"


class KissError(Exception):
    """Base of every error this project raises on purpose."""


class ClientError(KissError):
    """Something the client sent is wrong; retrying the same request cannot help."""

    code: ClassVar[str] = "invalid_request"
    status: ClassVar[int] = 422
    title: ClassVar[str] = "The request is invalid"

    def __init__(self, detail: str, subject: str | None = None, errors: list[dict[str, Any]] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.subject = subject
        self.errors = errors

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.detail, self.subject, self.errors))

    def headers(self) -> dict[str, str]:
        """HTTP headers that go with the problem response (Retry-After, WWW-Authenticate)."""
        return {}

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        return problem(
            code=self.code,
            status=self.status,
            title=self.title,
            detail=self.detail,
            subject=self.subject,
            errors=self.errors,
            instance=instance,
        )


def problem(
    *,
    code: str,
    status: int,
    title: str,
    detail: str,
    subject: str | None = None,
    errors: list[dict[str, Any]] | None = None,
    instance: str | None = None,
) -> dict[str, Any]:
    """An RFC 9457 problem object with our extension members (`code`, `subject`, `errors`)."""
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if subject is not None:
        body["subject"] = subject
    if errors:
        body["errors"] = errors
    if instance is not None:
        body["instance"] = instance
    return body


class InvalidRequest(ClientError):
    code = "invalid_request"
    status = 422
    title = "The request is invalid"


class PayloadTooLarge(ClientError):
    code = "payload_too_large"
    status = 413
    title = "The request body is too large"


class ImageUnreadable(ClientError):
    code = "image_unreadable"
    status = 422
    title = "The image could not be read"


class UnsupportedImage(ClientError):
    code = "unsupported_image"
    status = 415
    title = "The image format is not supported"


class UnsupportedMedia(ClientError):
    """Verification reads MP4 videos and JPEG stills (what this service produces), nothing else."""

    code = "unsupported_media"
    status = 415


class ImageTooLarge(ClientError):
    code = "image_too_large"
    status = 413
    title = "The image is too large"


class ImageTooSmall(ClientError):
    code = "image_too_small"
    status = 422
    title = "The image is too small"


class FaceNotFound(ClientError):
    code = "face_not_found"
    status = 422
    title = "No face was found in the photo"


class FaceTooSmall(ClientError):
    code = "face_too_small"
    status = 422
    title = "The face in the photo is too small"


class ConsentRequired(ClientError):
    code = "consent_required"
    status = 422
    title = "Consent must be attested for both people"


class SubjectMayBeMinor(ClientError):
    code = "subject_may_be_minor"
    status = 422
    title = "A person in the photos may be a minor"


class ExplicitContent(ClientError):
    code = "explicit_content"
    status = 422
    title = "A photo shows explicit content"


class SubjectPhotosMismatch(ClientError):
    """A subject's photos are not all of one person (kiss_core.faces.subject_photos); `errors` name the
    pairs of photos, by form field and number in the order sent, and their similarity."""

    code = "subject_photos_mismatch"
    status = 422
    title = "The photos of one person show different people"


class TooManyPhotos(ClientError):
    """More photos of a person than `limits.max_photos_per_subject`. The problem carries that limit as the
    extension member `limit`, so a client (the studio page) need not read it out of the detail."""

    code = "too_many_photos"
    status = 422
    title = "Too many photos of one person"

    def __init__(
        self,
        detail: str,
        subject: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        *,
        limit: int,
    ):
        super().__init__(detail, subject, errors)
        self.limit = limit

    def __reduce__(self) -> tuple[Any, ...]:
        return (_too_many_photos, (self.detail, self.subject, self.errors, self.limit))

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        return {**super().to_problem(instance), "limit": self.limit}


def _too_many_photos(
    detail: str, subject: str | None, errors: list[dict[str, Any]] | None, limit: int
) -> TooManyPhotos:
    """Unpickles a TooManyPhotos (its keyword-only `limit` does not fit `type(self)(*args)`)."""
    return TooManyPhotos(detail, subject, errors, limit=limit)


class OutputBlocked(ClientError):
    """The generated video failed the output safety check (kiss_core.safety.output_check): nothing of it
    is stored or served.

    A client error (422), not a server fault: the request (its photos, prompt, seed) produced these
    frames, the backends are deterministic for a given request, so a retry would generate the same
    frames again; the runner never retries a ClientError. The problem names the check
    (`explicit_content` or `subject_may_be_minor`) and the frame index, as extension members
    `check` and `frame`; `errors` carries the score (never any pixels).
    """

    code = "output_blocked"
    status = 422
    title = "The generated video was blocked by the output safety check"

    def __init__(
        self,
        detail: str,
        subject: str | None = None,
        errors: list[dict[str, Any]] | None = None,
        *,
        check: str = "",
        frame: int = -1,
    ):
        super().__init__(detail, subject, errors)
        self.check = check
        self.frame = frame

    def __reduce__(self) -> tuple[Any, ...]:
        return (_output_blocked, (self.detail, self.subject, self.errors, self.check, self.frame))

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        return {**super().to_problem(instance), "check": self.check, "frame": self.frame}


def _output_blocked(
    detail: str, subject: str | None, errors: list[dict[str, Any]] | None, check: str, frame: int
) -> OutputBlocked:
    """Unpickles an OutputBlocked (its keyword-only fields do not fit `type(self)(*args)`)."""
    return OutputBlocked(detail, subject, errors, check=check, frame=frame)


class JobNotFound(ClientError):
    code = "not_found"
    status = 404
    title = "No such video"


class ContentNotReady(ClientError):
    code = "content_not_ready"
    status = 409
    title = "The video has no content yet"


class JobFinished(ClientError):
    """Cancel asked of a job that already ended (completed, failed or canceled)."""

    code = "job_finished"
    status = 409
    title = "The video job has already finished"


class Overloaded(ClientError):
    """Not the client's fault, but theirs to retry: carries a Retry-After."""

    code = "overloaded"
    status = 503
    title = "The service is at capacity; retry later"

    def __init__(self, detail: str, retry_after_s: int = 10):
        super().__init__(detail)
        self.retry_after_s = retry_after_s

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.detail, self.retry_after_s))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class Unauthorized(ClientError):
    """No API key was sent (RFC 6750: the challenge carries no error code then)."""

    code = "unauthorized"
    status = 401
    title = "A valid API key is required"
    challenge: ClassVar[str] = 'Bearer realm="kissgen"'

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.challenge}


class InvalidApiKey(Unauthorized):
    """A key was sent but is not one of the configured keys: the same code, an `invalid_token` challenge."""

    challenge = 'Bearer realm="kissgen", error="invalid_token"'


class RateLimited(Overloaded):
    """The key sent more requests than its rate allows; Retry-After says when a token is available."""

    code = "rate_limited"
    status = 429
    title = "Too many requests for this API key"


class TooManyJobs(Overloaded):
    """The tenant already has its maximum of queued and running jobs."""

    code = "too_many_jobs"
    status = 429
    title = "Too many unfinished jobs for this tenant"


class TooManyStreams(Overloaded):
    """This ingress replica holds its maximum of open event streams (events.max_streams)."""

    code = "too_many_streams"
    status = 503
    title = "Too many open event streams; retry later or poll GET /v1/videos/{id}"


class ClipTooLong(ClientError):
    """The clip needs more frames than the diffusion backend generates in one window."""

    code = "clip_too_long"
    status = 422
    title = "The clip is longer than the video backend can generate"


class TokenBudgetExceeded(ClientError):
    """Size x length needs more transformer tokens than the service allows per request (memory, time)."""

    code = "token_budget_exceeded"
    status = 422
    title = "The video is too large (size x length) for the video backend"


class WebhookUrlRefused(ClientError):
    code = "webhook_url_refused"
    status = 422
    title = "The webhook_url is not allowed"


class JobCanceled(KissError):
    """The job was canceled while a stage worked on it: the stage stops (a generator at its next
    progress report) and the runner ends the job quietly. Neither a client's error nor ours: never
    retried, never turned into `failed`."""


class AttemptSuperseded(KissError):
    """The job's lease was given back (shutdown) or taken by another runner while a stage worked on
    this attempt: the stage stops at its next progress report instead of rendering for nobody and
    writing into a manifest another runner now owns. Never retried here, never turned into `failed`."""


class ServerError(KissError):
    """Our fault. `recoverable` says whether retrying the job may succeed."""

    code: ClassVar[str] = "internal_error"
    recoverable: ClassVar[bool] = True

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        return problem(
            code=self.code,
            status=500,
            title="Internal error",
            detail=str(self) or type(self).__name__,
            instance=instance,
        )


class StorageError(ServerError):
    code = "storage_error"
    recoverable = True


class SafetyModelUnavailable(ServerError):
    """A safety model is missing or is not the file we validated: the service must not start without it."""

    code = "safety_model_unavailable"
    recoverable = False


class GenerationError(ServerError):
    code = "generation_error"
    recoverable = False


class StageUnavailable(ServerError):
    """A stage the job needs has had no running replica for longer than `jobs.placement_timeout_s`.

    Usually a deployment that cannot be placed (no node offers its GPUs); the detail carries what
    Serve says about it. Not retried: the job fails with the reason instead of waiting for ever.
    """

    code = "stage_unavailable"
    recoverable = False

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        return problem(
            code=self.code,
            status=503,
            title="A stage of the service has no running replica",
            detail=str(self),
            instance=instance,
        )


def unwrap_remote(exc: BaseException) -> BaseException:
    """The original exception behind a Ray `RayTaskError` wrapper (which keeps it in `.cause`), or `exc`."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class BackendUnavailable(ClientError):
    """The request names a backend or LoRA this service has not loaded (or that does not fit the backend)."""

    code = "backend_unavailable"
    status = 422
    title = "The requested video backend or LoRA is not available"


class ModelDirectoryError(ServerError):
    """A configured model directory is missing or incomplete: the replica must not start without it.

    The message names the directory and the missing or malformed piece (a file, a subfolder, a field).
    """

    code = "model_directory_error"
    recoverable = False


class GpuMemoryInsufficient(ServerError):
    """The weights a replica is configured to load cannot fit its GPU memory: it must not start.

    The message gives each weight's size, the reserve and the memory available.
    """

    code = "gpu_memory_insufficient"
    recoverable = False
