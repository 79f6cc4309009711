"""What happens to a request before its 202: every refusal a client can cause, then the durable job.

Consent, the webhook URL, this replica's capacity and the tenant's cap are checked first; every photo
is analysed (face found, adult, not explicit), a subject's several photos must show one person and the
best of them is chosen (kiss_core.faces.subject_photos); the audit record, the inputs and the manifest
are written. A job exists only once all of that succeeded, so the runner (kiss_core.jobs.runner) never
meets a request it has to refuse.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from kiss_core.errors import (
    ClientError,
    ImageTooLarge,
    InvalidRequest,
    Overloaded,
    TooManyJobs,
    TooManyPhotos,
    WebhookUrlRefused,
)
from kiss_core.faces.subject_photos import best_photo, check_same_person
from kiss_core.generation.budget import check_request_budget
from kiss_core.jobs.audit import AuditLog, require_consent
from kiss_core.jobs.idempotency import IdempotencyInFlight, IdempotencyStore, fingerprint
from kiss_core.jobs.idempotency import check_key as check_idempotency_key
from kiss_core.jobs.protocol import Stages
from kiss_core.jobs.store import JobStore
from kiss_core.jobs.webhooks import WebhookSender
from kiss_core.keys import new_job_id
from kiss_core.schemas import (
    SUBJECTS,
    Attestation,
    ConsentReference,
    JobManifest,
    SubjectAnalysis,
    SubjectPhotos,
    VideoParams,
    photo_list,
    utcnow,
)
from kiss_core.settings import FaceSettings, GeneratorSettings, LimitSettings
from kiss_core.tracing import inject_context, stage_span


class JobAdmission:
    """Turns a validated request into a stored, queued job, or refuses it with a client error.

    `running` says how many jobs this replica runs now (the runner's count): running and in-admission
    requests together may not exceed `limits.max_active_jobs`.
    """

    def __init__(
        self,
        jobs: JobStore,
        stages: Stages,
        limits: LimitSettings,
        *,
        running: Callable[[], int] = lambda: 0,
        audit: AuditLog | None = None,
        webhooks: WebhookSender | None = None,
        generator: GeneratorSettings | None = None,
        faces: FaceSettings | None = None,
    ):
        self.jobs = jobs
        # A subject's photos are compared by their analyses' dlib descriptors, so with dlib's threshold.
        self.same_person_threshold = (faces or FaceSettings()).same_person_threshold
        self.generator = generator  # the diffusion backends' window and token limits, checked before 202
        self.stages = stages
        self.limits = limits
        self.running = running
        self.audit = audit or AuditLog(jobs.store)
        self.webhooks = webhooks
        self.idempotency = IdempotencyStore(jobs.store)
        self._in_admission = 0  # requests between their first check and their stored job
        self._in_admission_by_tenant: dict[str, int] = {}
        self._keys_in_flight: set[tuple[str, str]] = set()

    def check_capacity(self) -> None:
        """Raise Overloaded (503 with Retry-After) while this replica is at `limits.max_active_jobs`.

        The HTTP layer calls it before reading a request's body as well: under overload most submissions
        are refused, and a refusal that first parses two photos costs the replica the same CPU and
        allocator churn as an accepted one. submit() checks again, since admission may fill meanwhile.
        """
        active = self.running() + self._in_admission
        if active >= self.limits.max_active_jobs:
            raise Overloaded(f"this replica already has {active} jobs", self.limits.retry_after_s)

    async def submit(
        self,
        params: VideoParams,
        photos: Mapping[str, SubjectPhotos],
        attestation: Attestation | None,
        incoming_trace: dict[str, str] | None = None,
        *,
        tenant: str = "public",
        max_tenant_jobs: int | None = None,
        webhook_url: str | None = None,
    ) -> JobManifest:
        """Check consent, the webhook URL and the limits, analyse every photo, audit, persist the job:
        client errors come before the 202. `photos`: each subject's photo, or several of the same person
        in the order sent. `max_tenant_jobs` caps the tenant's queued + running jobs."""
        attestation = require_consent(attestation)
        photos = self._check_photo_counts(photos)
        if self.generator is not None:  # after the counts: on wan-vace every photo is a reference image
            references = sum(len(photo_list(p)) for p in photos.values())
            check_request_budget(params, self.generator, references=references)
        if webhook_url is not None:
            if self.webhooks is None:
                raise WebhookUrlRefused("webhooks are not enabled on this service")
            await asyncio.to_thread(self.webhooks.check, webhook_url, tenant)
        self.check_capacity()
        job_id = new_job_id()
        slot: str | None = None
        if max_tenant_jobs is not None:
            await self._check_tenant_jobs(tenant, max_tenant_jobs)
            slot = await self._claim_tenant_slot(tenant, job_id, max_tenant_jobs)
        self._in_admission += 1  # holds a slot while the photos are analysed; the runner takes it over
        self._in_admission_by_tenant[tenant] = self._in_admission_by_tenant.get(tenant, 0) + 1
        stored = False
        try:
            self._check_upload_sizes(photos)
            with stage_span(
                "video.submit", incoming_trace or None, style=params.style, frames=params.frame_count
            ):
                trace = inject_context()
                analyses = await self._analyse_photos(photos, trace)
                best = self._choose_photos(analyses)
                job = (params, photos, attestation, analyses, trace)
                manifest = await self._store_job(*job, tenant, webhook_url, job_id, slot, best)
                stored = True
                return manifest
        finally:
            self._in_admission -= 1
            self._in_admission_by_tenant[tenant] -= 1
            if not self._in_admission_by_tenant[tenant]:
                del self._in_admission_by_tenant[tenant]
            if slot is not None and not stored:  # refused after the claim: the slot is free again
                await asyncio.shield(asyncio.to_thread(self.jobs.slots.release, tenant, job_id, slot))

    async def analyze(
        self, photo: bytes, subject: str, incoming_trace: dict[str, str] | None = None
    ) -> SubjectAnalysis:
        """One photo through the same checks as a submission's (upload size, decode limits, content
        filter, face analysis, age gate), storing nothing: no input, no audit record, no job.

        Capacity: refused with Overloaded while this replica is at `limits.max_active_jobs`, like a
        submission, but an analysis holds no slot of it (it takes a second, a job minutes; a page checks
        each photo as it is chosen, and that must not count as a job against the limit).
        """
        self.check_capacity()
        if len(photo) > self.limits.max_upload_bytes:
            raise ImageTooLarge(
                f"the photo is larger than the limit of {self.limits.max_upload_bytes} bytes", subject
            )
        with stage_span("analysis.request", incoming_trace or None, subject=subject):
            return await self.stages.analyze(photo, subject, inject_context())

    async def submit_once(
        self,
        key: str,
        params: VideoParams,
        photos: Mapping[str, SubjectPhotos],
        attestation: Attestation | None,
        incoming_trace: dict[str, str] | None = None,
        *,
        tenant: str = "public",
        max_tenant_jobs: int | None = None,
        webhook_url: str | None = None,
    ) -> tuple[JobManifest, bool]:
        """`submit` under an Idempotency-Key: (the job, whether it is a replay of an earlier request).
        Keys are per tenant: two tenants sending the same key get two jobs."""
        check_idempotency_key(key)
        if (tenant, key) in self._keys_in_flight:
            raise IdempotencyInFlight("the first request with this Idempotency-Key is still running")
        self._keys_in_flight.add((tenant, key))
        records = self.idempotency.for_tenant(tenant)
        try:
            digest = fingerprint(params, attestation, photos, webhook_url)
            replay = await asyncio.to_thread(records.begin, key, digest, utcnow())
            if replay is not None:
                return await asyncio.to_thread(self.jobs.get, replay, tenant), True
            try:
                manifest = await self.submit(
                    params,
                    photos,
                    attestation,
                    incoming_trace,
                    tenant=tenant,
                    max_tenant_jobs=max_tenant_jobs,
                    webhook_url=webhook_url,
                )
            except BaseException:
                await asyncio.to_thread(records.abandon, key)
                raise
            await asyncio.to_thread(records.complete, key, digest, manifest.id, utcnow())
            return manifest, False
        finally:
            self._keys_in_flight.discard((tenant, key))

    async def _check_tenant_jobs(self, tenant: str, limit: int) -> None:
        """A cheap first refusal: the tenant's queued + running jobs (all replicas, from the job store's
        markers) plus those being admitted here reach `limit`. It also counts jobs accepted before slots
        existed; the slot claim that follows makes the cap exact across replicas."""
        in_admission = self._in_admission_by_tenant.get(tenant, 0)
        active = await asyncio.to_thread(self.jobs.active, tenant)
        if len(active) + in_admission >= limit:  # markers may be stale: read the manifests before refusing
            active = await asyncio.to_thread(self.jobs.active, tenant, True)
        if len(active) + in_admission >= limit:
            raise TooManyJobs(
                f"tenant {tenant!r} has {len(active) + in_admission} unfinished jobs; the limit is {limit}",
                self.limits.retry_after_s,
            )

    async def _claim_tenant_slot(self, tenant: str, job_id: str, limit: int) -> str:
        """The exact cap across replicas: one of the tenant's `limit` slots, claimed with a conditional
        create (kiss_core.jobs.slots), held by the job until it ends; TooManyJobs when none is free."""
        slot = await asyncio.to_thread(self.jobs.slots.claim, tenant, job_id, limit)
        if slot is None:
            raise TooManyJobs(
                f"tenant {tenant!r} has {limit} unfinished jobs; the limit is {limit}",
                self.limits.retry_after_s,
            )
        return slot

    def _check_photo_counts(self, photos: Mapping[str, SubjectPhotos]) -> dict[str, SubjectPhotos]:
        """At least one photo of each subject, at most `limits.max_photos_per_subject`, none the same file
        twice (it would add nothing but weight in the mean embedding: a client's mistake); a subject given
        as a one-photo list comes back as that photo, so it is handled exactly as one photo is."""
        checked: dict[str, SubjectPhotos] = {}
        most = self.limits.max_photos_per_subject
        for subject in SUBJECTS:
            listed = photo_list(photos[subject]) if subject in photos else []
            if not listed:
                field = f"subject_{subject}"
                errors = [{"field": field, "message": "a photo file is required"}]
                raise InvalidRequest(f"{field} needs a photo", subject, errors)
            if len(listed) > most:
                raise TooManyPhotos(
                    f"subject_{subject} has {len(listed)} photos; at most {most} of each person are taken",
                    subject,
                    [{"field": f"subject_{subject}", "message": f"{len(listed)} photos, at most {most}"}],
                    limit=most,
                )
            if len(set(listed)) < len(listed):
                field = f"subject_{subject}"
                errors = [{"field": field, "message": "the same photo given more than once"}]
                raise InvalidRequest(f"{field} has the same photo more than once", subject, errors)
            checked[subject] = listed[0] if len(listed) == 1 else listed
        return checked

    def _check_upload_sizes(self, photos: Mapping[str, SubjectPhotos]) -> None:
        for subject in SUBJECTS:
            listed = photo_list(photos[subject])
            for number, photo in enumerate(listed, 1):
                size = len(photo)
                if size > self.limits.max_upload_bytes:
                    name = f"subject_{subject}"
                    name = name if len(listed) == 1 else f"photo {number} of {name}"
                    raise ImageTooLarge(
                        f"{name} is {size} bytes; the limit is {self.limits.max_upload_bytes} bytes", subject
                    )

    async def _analyse_photos(
        self, photos: Mapping[str, SubjectPhotos], trace: dict[str, str]
    ) -> dict[str, list[SubjectAnalysis]]:
        """Every photo at once; when several are refused, the first in the order a's photos, then b's is
        named (the answer must not depend on timing). A refusal of one of a subject's several photos says
        which (`photo`, 1-based in the order sent)."""
        listed = {s: photo_list(photos[s]) for s in SUBJECTS}
        order = [(s, n) for s in SUBJECTS for n in range(len(listed[s]))]
        outcomes = await asyncio.gather(
            *(self.stages.analyze(listed[s][n], s, trace) for s, n in order), return_exceptions=True
        )
        for (subject, number), outcome in zip(order, outcomes, strict=True):
            if isinstance(outcome, ClientError) and len(listed[subject]) > 1:
                raise _naming_photo(outcome, subject, number + 1)
            if isinstance(outcome, BaseException):
                raise outcome
        analyses: dict[str, list[SubjectAnalysis]] = {s: [] for s in SUBJECTS}
        for (subject, _), outcome in zip(order, outcomes, strict=True):
            analyses[subject].append(outcome)  # type: ignore[arg-type]
        return analyses

    def _choose_photos(self, analyses: Mapping[str, list[SubjectAnalysis]]) -> dict[str, int]:
        """A subject's several photos must be one person (SubjectPhotosMismatch); the best composes the
        scene. Per subject, the index of that photo (0 for one photo)."""
        for subject in SUBJECTS:
            if len(analyses[subject]) > 1:
                check_same_person(subject, analyses[subject], self.same_person_threshold)
        return {s: best_photo(analyses[s]) for s in SUBJECTS}

    async def _store_job(
        self,
        params: VideoParams,
        photos: Mapping[str, SubjectPhotos],
        attestation: Attestation,
        analyses: dict[str, list[SubjectAnalysis]],
        trace: dict[str, str],
        tenant: str,
        webhook_url: str | None,
        job_id: str,
        slot: str | None = None,
        best: dict[str, int] | None = None,
    ) -> JobManifest:
        """The audit record first (no job exists without the attestation that allowed it), then the
        inputs and the manifest, which names the record (its outputs' C2PA manifests assert it) and the
        tenant's slot the job holds. `best`: per subject, the photo the scene is composed from."""
        best = best or {}
        chosen: dict[str, SubjectAnalysis] = {s: analyses[s][best.get(s, 0)] for s in SUBJECTS}
        record = await asyncio.to_thread(self.audit.record, job_id, attestation, photos, chosen, tenant, best)
        consent = ConsentReference(audit_record=record.request_id, policy_version=record.policy_version)
        return await asyncio.to_thread(
            self.jobs.create,
            params,
            photos,
            analyses,
            trace,
            job_id,
            tenant,
            webhook_url,
            consent,
            tenant_slot=slot,
            best=best,
        )


def _naming_photo(error: ClientError, subject: str, number: int) -> ClientError:
    """`error`, about one of a subject's several photos, saying which: the detail starts with it and
    `errors` gains the photo's field and number (1-based, in the order sent)."""
    field = f"subject_{subject}"
    error.detail = f"photo {number} of {field}: {error.detail}"
    error.args = (error.detail,)
    error.errors = [*(error.errors or []), {"field": field, "photo": number, "message": error.title}]
    return error
