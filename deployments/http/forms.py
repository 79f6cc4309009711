"""Request parsing: the multipart form of POST /v1/videos into VideoParams, an attestation and each
subject's photo (or several: a repeated subject_a / subject_b field);
the one-photo form of POST /v1/analyses; the JSON body of POST /v1/reports; the paging query of
GET /v1/videos; a size-limited raw body. Every bad field is named in one invalid_request problem, under
the form field the client sent."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from kiss_core.errors import InvalidRequest, PayloadTooLarge, TooManyPhotos
from kiss_core.jobs.reports import REPORT_TARGETS, ReportRequest
from kiss_core.schemas import SUBJECTS, Attestation, SubjectPhotos, VideoParams
from kiss_core.settings import LimitSettings

PARAM_FIELDS = tuple(VideoParams.model_fields)
FILE_FIELDS = tuple(f"subject_{s}" for s in SUBJECTS)
CONSENT_FIELDS = {f"consent_{s}": s for s in SUBJECTS}
CONSENT_REF_FIELDS = {f"consent_ref_{s}": s for s in SUBJECTS}
WEBHOOK_FIELD = "webhook_url"
TEXT_FIELDS = (*PARAM_FIELDS, *CONSENT_FIELDS, *CONSENT_REF_FIELDS, WEBHOOK_FIELD)
ANALYSIS_PHOTO_FIELD = "photo"
ANALYSIS_SUBJECT_FIELD = "subject"
# A report is a reason, <= 1000 characters of details and an id or a hash: 16 KiB is plenty.
MAX_REPORT_BYTES = 16 * 1024
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20

# Attestation validation errors are reported under the form field the client sent.
_CONSENT_FIELD_OF = {
    **{f"{s}.consented": f"consent_{s}" for s in SUBJECTS},
    **{f"{s}.reference": f"consent_ref_{s}" for s in SUBJECTS},
}


@dataclass(frozen=True)
class VideoForm:
    """A parsed POST /v1/videos. `attestation` None or not consented is refused later, naming the person.
    `photos`: per subject its photo's bytes, or a list of several photos' in the order sent."""

    params: VideoParams
    attestation: Attestation | None
    photos: dict[str, SubjectPhotos]
    webhook_url: str | None


def create_request_schema(
    max_photos: int = LimitSettings.model_fields["max_photos_per_subject"].default,
) -> dict[str, Any]:
    """OpenAPI for the multipart body, which the handler parses itself to control limits and errors.
    `max_photos`: how often each subject's field may be repeated (`limits.max_photos_per_subject`)."""
    photo = {"type": "string", "format": "binary"}
    several = (
        f" Up to {max_photos} photos of the same person (limits.max_photos_per_subject, in GET"
        " /v1/capabilities): repeat the field; the best one composes the scene, all make the identity"
        " reference."
    )
    consent = {
        f"consent_{s}": {
            "type": "boolean",
            "description": f"Attests that the person in subject_{s} is an adult and consented. Must be true.",
        }
        for s in SUBJECTS
    }
    references = {
        f"consent_ref_{s}": {"type": "string", "maxLength": 200, "description": "Your consent record id."}
        for s in SUBJECTS
    }
    properties = {
        "subject_a": {**photo, "description": "Photo of person A (JPEG, PNG, WebP, BMP, TIFF)." + several},
        "subject_b": {**photo, "description": "Photo of person B." + several},
        **consent,
        **references,
        **VideoParams.model_json_schema()["properties"],
        WEBHOOK_FIELD: {
            "type": "string",
            "format": "uri",
            "description": "https URL that receives video.completed / video.failed, signed per Standard"
            " Webhooks. Must resolve to public addresses only.",
        },
    }
    schema = {"type": "object", "required": [*FILE_FIELDS, *CONSENT_FIELDS], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


async def parse_video_form(request: Request, limits: LimitSettings) -> VideoForm:
    """The create request's form, checked against the request and upload limits."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limits.max_request_bytes:
        raise PayloadTooLarge(f"the request body is {length} bytes; the limit is {limits.max_request_bytes}")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest("the request body must be multipart/form-data with subject_a and subject_b")
    most = limits.max_photos_per_subject
    # One file more than both subjects may have, so that an extra photo is named as too_many_photos.
    max_files = len(FILE_FIELDS) * most + 1
    try:
        form = await request.form(max_files=max_files, max_fields=len(TEXT_FIELDS) + 2)
    except Exception as exc:  # malformed multipart, too many parts
        if "files" in str(exc).lower():
            raise TooManyPhotos(
                f"the request has more than {max_files} files; at most {most} photos of each person"
                " are taken",
                limit=most,
            ) from None
        raise InvalidRequest(f"the multipart body could not be parsed: {exc}") from None
    errors: list[dict[str, Any]] = []
    for name in form:
        if name not in TEXT_FIELDS and name not in FILE_FIELDS:
            errors.append({"field": name, "message": "unknown field"})
        elif name not in FILE_FIELDS and len(form.getlist(name)) > 1:
            errors.append({"field": name, "message": "given more than once"})
    for subject, name in zip(SUBJECTS, FILE_FIELDS, strict=True):
        count = len(form.getlist(name))
        if count > most:
            raise TooManyPhotos(
                f"{name} was given {count} times; at most {most} photos of each person are taken",
                subject,
                [{"field": name, "message": f"{count} photos, at most {most}"}],
                limit=most,
            )
    photos: dict[str, SubjectPhotos] = {}
    for subject, name in zip(SUBJECTS, FILE_FIELDS, strict=True):
        uploads = form.getlist(name)
        if not uploads or not all(isinstance(u, UploadFile) for u in uploads):
            errors.append({"field": name, "message": "a photo file is required"})
            continue
        read = [await u.read(limits.max_upload_bytes + 1) for u in uploads if isinstance(u, UploadFile)]
        photos[subject] = read[0] if len(read) == 1 else read
    text: dict[str, str] = {}
    for name in TEXT_FIELDS:
        value = form.get(name)
        if isinstance(value, str):
            text[name] = value
        elif value is not None:
            errors.append({"field": name, "message": "must be a plain form field, not a file"})
    params = _validated(VideoParams, {n: text[n] for n in PARAM_FIELDS if n in text}, errors)
    # A missing consent field counts as "not consented" (refused as consent_required, naming the
    # person); a malformed one is invalid_request.
    consent: dict[str, Any] = {
        s: {"consented": text.get(name, "false"), "reference": text.get(f"consent_ref_{s}")}
        for name, s in CONSENT_FIELDS.items()
    }
    attestation = _validated(Attestation, consent, errors, rename=_CONSENT_FIELD_OF)
    if errors or params is None:
        fields = ", ".join(sorted({e["field"] for e in errors}))
        raise InvalidRequest(f"invalid fields: {fields}", None, errors)
    return VideoForm(params, attestation, photos, text.get(WEBHOOK_FIELD) or None)


def analysis_request_schema() -> dict[str, Any]:
    """OpenAPI for POST /v1/analyses' multipart body (parsed by hand, like the create request's)."""
    properties = {
        ANALYSIS_PHOTO_FIELD: {
            "type": "string",
            "format": "binary",
            "description": "The photo to check (JPEG, PNG, WebP, BMP, TIFF).",
        },
        ANALYSIS_SUBJECT_FIELD: {
            "type": "string",
            "enum": list(SUBJECTS),
            "default": "a",
            "description": "Which person of a later request the photo is; only names the subject in errors.",
        },
    }
    schema = {"type": "object", "required": [ANALYSIS_PHOTO_FIELD], "properties": properties}
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}}


async def parse_analysis_form(request: Request, limits: LimitSettings) -> tuple[bytes, str]:
    """POST /v1/analyses' form: (the photo's bytes, the subject it is named as), checked against the
    request and upload limits. A photo over the upload limit comes back one byte longer than the limit,
    for the analysis to refuse as image_too_large under its subject."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limits.max_request_bytes:
        raise PayloadTooLarge(f"the request body is {length} bytes; the limit is {limits.max_request_bytes}")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise InvalidRequest(
            "the request body must be multipart/form-data with a `photo` file",
            None,
            [{"field": ANALYSIS_PHOTO_FIELD, "message": "a photo file is required"}],
        )
    try:
        form = await request.form(max_files=1, max_fields=2)
    except Exception as exc:  # malformed multipart, too many parts
        raise InvalidRequest(f"the multipart body could not be parsed: {exc}") from None
    errors: list[dict[str, Any]] = []
    for name in form:
        if name not in (ANALYSIS_PHOTO_FIELD, ANALYSIS_SUBJECT_FIELD):
            errors.append({"field": name, "message": "unknown field"})
        elif len(form.getlist(name)) > 1:
            errors.append({"field": name, "message": "given more than once"})
    subject = form.get(ANALYSIS_SUBJECT_FIELD, "a")
    if subject not in SUBJECTS:
        errors.append({"field": ANALYSIS_SUBJECT_FIELD, "message": f"must be one of {', '.join(SUBJECTS)}"})
    upload = form.get(ANALYSIS_PHOTO_FIELD)
    photo = b""
    if not isinstance(upload, UploadFile):
        errors.append({"field": ANALYSIS_PHOTO_FIELD, "message": "a photo file is required"})
    else:
        photo = await upload.read(limits.max_upload_bytes + 1)
    if errors:
        fields = ", ".join(sorted({e["field"] for e in errors}))
        raise InvalidRequest(f"invalid fields: {fields}", None, errors)
    assert isinstance(subject, str)
    return photo, subject


async def parse_report(request: Request) -> ReportRequest:
    """POST /v1/reports' JSON body as a ReportRequest; every invalid field named."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise InvalidRequest("the request body must be JSON (Content-Type: application/json)")
    body = await read_body(request, MAX_REPORT_BYTES)
    try:
        values = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidRequest(
            "the request body is not valid JSON", None, [{"field": "body", "message": "not JSON"}]
        ) from None
    if not isinstance(values, dict):
        raise InvalidRequest(
            "the request body must be a JSON object", None, [{"field": "body", "message": "not an object"}]
        )
    errors: list[dict[str, Any]] = []
    targets = [name for name in REPORT_TARGETS if values.get(name) is not None]
    if len(targets) != 1:
        message = "give exactly one of video_id and file_sha256"
        errors += [{"field": name, "message": message} for name in REPORT_TARGETS]
        values = {k: v for k, v in values.items() if k not in REPORT_TARGETS}
        values["video_id"] = "video_0"  # so the other fields are still checked, each named
    report = _validated(ReportRequest, values, errors)
    if errors or report is None:
        fields = ", ".join(sorted({e["field"] for e in errors}))
        raise InvalidRequest(f"invalid fields: {fields}", None, errors)
    return report


def page_params(query: Mapping[str, str]) -> tuple[int, str | None]:
    """`limit` (1..100) and the opaque `cursor` (alias `page_token`) of GET /v1/videos."""
    raw = query.get("limit", str(DEFAULT_PAGE_SIZE))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise InvalidRequest(
            f"`limit` must be an integer in 1..{MAX_PAGE_SIZE} but is {raw[:20]!r}",
            None,
            [{"field": "limit", "message": "invalid"}],
        )
    return int(raw), query.get("cursor") or query.get("page_token") or None


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused as soon as it grows past `limit` bytes."""
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise PayloadTooLarge(f"the file is larger than {limit} bytes")
    return bytes(body)


def trace_headers(request: Request) -> dict[str, str]:
    """The caller's W3C trace context, if it sent one."""
    return {k: v for k, v in request.headers.items() if k in ("traceparent", "tracestate")}


def _validated(
    model: type[BaseModel],
    values: dict[str, Any],
    errors: list[dict[str, Any]],
    rename: Mapping[str, str] | None = None,
) -> Any:
    """`model` built from form values, or None with each problem appended to `errors` by form field."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        for e in exc.errors():
            loc = ".".join(str(p) for p in e["loc"]) or "body"
            errors.append({"field": (rename or {}).get(loc, loc), "message": e["msg"]})
        return None
