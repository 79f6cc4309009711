"""Runs jobs through the stages without knowing where the stages live.

The same orchestrator drives the Ray Serve graph (stages are deployment handles whose responses are
passed along unresolved, so tensors never come through here) and the in-process pipeline used by
unit tests and the serving-overhead benchmark (stages are plain function calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Mapping
from datetime import timedelta
from typing import Any, Protocol

from kiss_core.errors import (
    ClientError,
    ImageTooLarge,
    KissError,
    Overloaded,
    ServerError,
    TooManyJobs,
    WebhookUrlRefused,
    unwrap_remote,
)
from kiss_core.jobs.audit import AuditLog, require_consent
from kiss_core.jobs.idempotency import IdempotencyInFlight, IdempotencyStore, fingerprint
from kiss_core.jobs.idempotency import check_key as check_idempotency_key
from kiss_core.jobs.store import InvalidTransition, JobStore
from kiss_core.jobs.webhooks import WebhookSender, event_for, message_id
from kiss_core.keys import new_job_id
from kiss_core.schemas import (
    SUBJECTS,
    TERMINAL_STATUSES,
    Attestation,
    JobManifest,
    JobResult,
    SubjectAnalysis,
    VideoParams,
    WebhookDelivery,
    utcnow,
)
from kiss_core.settings import LimitSettings
from kiss_core.tracing import inject_context, stage_span

log = logging.getLogger(__name__)


class Stages(Protocol):
    """Where the work happens. `condition` returns an opaque handle that `generate` consumes."""

    def analyze(self, image: bytes, subject: str, trace: dict[str, str]) -> Awaitable[SubjectAnalysis]: ...

    def condition(
        self,
        job_id: str,
        input_keys: Mapping[str, str],
        analyses: list[SubjectAnalysis],
        trace: dict[str, str],
    ) -> Any: ...

    def generate(
        self,
        job_id: str,
        params: VideoParams,
        input_keys: Mapping[str, str],
        analyses: list[SubjectAnalysis],
        conditioning: Any,
        trace: dict[str, str],
    ) -> Awaitable[JobResult]: ...


class JobOrchestrator:
    """Accepts jobs (validate, analyse, persist) and runs them (identity, generation) with retries."""

    def __init__(
        self,
        jobs: JobStore,
        stages: Stages,
        limits: LimitSettings,
        max_attempts: int = 3,
        audit: AuditLog | None = None,
        lease_s: float = 30.0,
        owner: str | None = None,
        max_active: int = 16,
        retry_after_s: int = 10,
        webhooks: WebhookSender | None = None,
    ):
        self.max_active = max_active
        self._admitting = 0
        self._admitting_by_tenant: dict[str, int] = {}
        self.idempotency = IdempotencyStore(jobs.store)
        self._keys_in_flight: set[tuple[str, str]] = set()
        self.webhooks = webhooks
        self._deliveries: set[asyncio.Task[None]] = set()
        self.retry_after_s = retry_after_s
        self.jobs = jobs
        self.audit = audit or AuditLog(jobs.store)
        self.lease = timedelta(seconds=lease_s)
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.stages = stages
        self.limits = limits
        self.max_attempts = max_attempts
        self._running: dict[str, asyncio.Task[JobManifest]] = {}

    async def submit(
        self,
        params: VideoParams,
        photos: Mapping[str, bytes],
        attestation: Attestation | None,
        incoming_trace: dict[str, str] | None = None,
        *,
        tenant: str = "public",
        max_tenant_jobs: int | None = None,
        webhook_url: str | None = None,
    ) -> JobManifest:
        """Check consent, the webhook URL and the limits, analyse both photos, audit, persist the job:
        client errors come before the 202. `max_tenant_jobs` caps the tenant's queued + running jobs."""
        attestation = require_consent(attestation)
        if webhook_url is not None:
            if self.webhooks is None:
                raise WebhookUrlRefused("webhooks are not enabled on this service")
            await asyncio.to_thread(self.webhooks.check, webhook_url, tenant)
        active = len(self._running) + self._admitting
        if active >= self.max_active:
            raise Overloaded(f"this replica already has {active} jobs", self.retry_after_s)
        if max_tenant_jobs is not None:
            await self._check_tenant_jobs(tenant, max_tenant_jobs)
        self._admitting += 1  # holds a slot while the photos are analysed; start() takes it over
        self._admitting_by_tenant[tenant] = self._admitting_by_tenant.get(tenant, 0) + 1
        try:
            return await self._admit(params, photos, attestation, incoming_trace, tenant, webhook_url)
        finally:
            self._admitting -= 1
            self._admitting_by_tenant[tenant] -= 1
            if not self._admitting_by_tenant[tenant]:
                del self._admitting_by_tenant[tenant]

    async def _check_tenant_jobs(self, tenant: str, limit: int) -> None:
        """Refuse when the tenant's queued + running jobs (all replicas, from the job store's markers)
        plus those being admitted here reach `limit`. Replicas admitting at the same instant may
        overshoot by a job each: the cap is a fairness limit, not a security boundary."""
        admitting = self._admitting_by_tenant.get(tenant, 0)
        active = await asyncio.to_thread(self.jobs.active, tenant)
        if len(active) + admitting >= limit:  # markers may be stale: read the manifests before refusing
            active = await asyncio.to_thread(self.jobs.active, tenant, True)
        if len(active) + admitting >= limit:
            raise TooManyJobs(
                f"tenant {tenant!r} has {len(active) + admitting} unfinished jobs; the limit is {limit}",
                self.retry_after_s,
            )

    async def submit_once(
        self,
        key: str,
        params: VideoParams,
        photos: Mapping[str, bytes],
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

    async def _admit(
        self,
        params: VideoParams,
        photos: Mapping[str, bytes],
        attestation: Attestation,
        incoming_trace: dict[str, str] | None,
        tenant: str = "public",
        webhook_url: str | None = None,
    ) -> JobManifest:
        for subject in SUBJECTS:
            size = len(photos[subject])
            if size > self.limits.max_upload_bytes:
                raise ImageTooLarge(
                    f"subject_{subject} is {size} bytes; the limit is {self.limits.max_upload_bytes} bytes",
                    subject,
                )
        with stage_span(
            "video.submit", incoming_trace or None, style=params.style, frames=params.frame_count
        ):
            trace = inject_context()
            outcomes = await asyncio.gather(
                *(self.stages.analyze(photos[s], s, trace) for s in SUBJECTS), return_exceptions=True
            )
            # When both photos are refused, name subject a: the answer must not depend on timing.
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
            analyses = list(outcomes)
            by_subject = dict(zip(SUBJECTS, analyses, strict=True))
            job_id = new_job_id()
            # The audit record is written first: no job exists without the attestation that allowed it.
            await asyncio.to_thread(self.audit.record, job_id, attestation, photos, by_subject, tenant)
            return await asyncio.to_thread(
                self.jobs.create, params, photos, by_subject, trace, job_id, tenant, webhook_url
            )

    def start(self, job_id: str) -> asyncio.Task[JobManifest]:
        """Run the job in the background of this event loop (idempotent while it runs)."""
        task = self._running.get(job_id)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self.run(job_id), name=f"job-{job_id}")
            self._running[job_id] = task
            task.add_done_callback(lambda _t, j=job_id: self._running.pop(j, None))
        return task

    async def cancel(self, job_id: str) -> bool:
        """Stop a running job of this replica; True if one was running."""
        task = self._running.pop(job_id, None)
        if task is None or task.done():
            return False
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return True

    async def hand_back(self) -> list[str]:
        """Stop this runner's jobs and give them back for another replica to run now (graceful shutdown).

        Each job goes back to `queued` without counting the interrupted attempt, and its lease is
        written as already expired, so the next recovery pass of any replica takes it at once instead
        of after the lease would have lapsed.
        """
        handed = []
        for job_id, task in list(self._running.items()):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            manifest = await asyncio.to_thread(self.jobs.get, job_id)
            if manifest.status == "in_progress":
                await asyncio.to_thread(
                    self.jobs.update,
                    job_id,
                    status="queued",
                    stage="queued",
                    attempts=max(0, manifest.attempts - 1),
                )
            if manifest.status not in TERMINAL_STATUSES:
                await asyncio.to_thread(self.jobs.write_lease, job_id, self.owner, utcnow())
                handed.append(job_id)
        return handed

    async def run(self, job_id: str) -> JobManifest:
        """At-least-once: retry what may be transient, fail at once on what cannot change.

        Storage calls run in threads: an S3 server that is slow or retrying must not stall the loop.
        """
        manifest = await asyncio.to_thread(self.jobs.get, job_id)
        ended_here = False  # only the runner that makes the job terminal sends its webhook
        while manifest.status not in TERMINAL_STATUSES:
            attempt = manifest.attempts + 1
            await asyncio.to_thread(self.jobs.write_lease, job_id, self.owner, utcnow() + self.lease)
            manifest = await asyncio.to_thread(
                self.jobs.update, job_id, status="in_progress", stage="identity", attempts=attempt
            )
            stop_heartbeat = asyncio.Event()
            heartbeat = asyncio.get_running_loop().create_task(self._hold_lease(job_id, stop_heartbeat))
            try:
                result = await self._attempt(manifest)
            except asyncio.CancelledError:
                raise
            except BaseException as raw:
                exc = unwrap_remote(raw)
                manifest = await asyncio.to_thread(self._after_failure, job_id, attempt, exc)
                ended_here = manifest.status in TERMINAL_STATUSES
                if not ended_here:
                    await asyncio.sleep(min(2.0 * attempt, 10.0))
                continue
            finally:
                stop_heartbeat.set()
                await heartbeat  # lets a renewal in flight finish, so nothing rewrites the lease later
            try:
                manifest = await asyncio.to_thread(self.jobs.complete, job_id, result)
                ended_here = True
            except InvalidTransition:
                manifest = await asyncio.to_thread(self.jobs.get, job_id)
        await asyncio.to_thread(self.jobs.release_lease, job_id)
        if ended_here:
            self.notify(manifest)
        return manifest

    def notify(self, manifest: JobManifest) -> asyncio.Task[None] | None:
        """Deliver the terminal job's webhook in the background; never raises, never delays the job."""
        if manifest.webhook_url is None or self.webhooks is None:
            return None
        task = asyncio.get_running_loop().create_task(self._deliver(manifest), name=f"webhook-{manifest.id}")
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)
        return task

    async def _deliver(self, manifest: JobManifest) -> None:
        assert self.webhooks is not None and manifest.webhook_url is not None
        event = event_for(manifest, utcnow(), self.webhooks.settings.public_base_url)
        msg_id = message_id(manifest.id, str(event["type"]))

        async def record(delivery: WebhookDelivery) -> None:
            await asyncio.to_thread(self.jobs.update, manifest.id, webhook=delivery)

        try:
            delivery = await self.webhooks.deliver(
                manifest.webhook_url, manifest.tenant, event, msg_id, record
            )
            log.info(
                "webhook %s of %s: %s after %d attempts",
                msg_id,
                manifest.id,
                delivery.status,
                delivery.attempts,
            )
        except Exception:
            log.exception("webhook delivery for job %s failed", manifest.id)

    async def _hold_lease(self, job_id: str, stop: asyncio.Event) -> None:
        """Renews this runner's lease while an attempt runs; if this process dies, the lease lapses."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.lease.total_seconds() / 3)
                return
            try:
                await asyncio.to_thread(self.jobs.write_lease, job_id, self.owner, utcnow() + self.lease)
            except Exception:  # storage briefly down: the next renewal may still make it in time
                log.warning("could not renew the lease of job %s", job_id, exc_info=True)

    async def recover(self) -> list[str]:
        """Start unfinished jobs whose runner is gone: lease lapsed, or accepted but never leased.

        Several replicas may recover the same job at once; the claim is re-read after a short pause to
        make that rare, and outputs are idempotent, so a double run costs time, not correctness.
        """
        now = utcnow()
        started = []
        for manifest in await asyncio.to_thread(self.jobs.unfinished):
            if manifest.id in self._running:
                continue
            lease = await asyncio.to_thread(self.jobs.read_lease, manifest.id)
            expires = lease.until if lease is not None else manifest.updated_at + self.lease
            if expires > now:
                continue
            await asyncio.to_thread(self.jobs.write_lease, manifest.id, self.owner, utcnow() + self.lease)
            await asyncio.sleep(random.uniform(0.2, 0.5))
            claimed = await asyncio.to_thread(self.jobs.read_lease, manifest.id)
            if claimed is not None and claimed.owner == self.owner:
                log.info("recovering job %s (lease: %s)", manifest.id, lease)
                self.start(manifest.id)
                started.append(manifest.id)
        return started

    async def _attempt(self, manifest: JobManifest) -> JobResult:
        with stage_span("video.run", manifest.trace_context, job_id=manifest.id, attempt=manifest.attempts):
            trace = inject_context()
            conditioning = self.stages.condition(manifest.id, manifest.input_keys, manifest.subjects, trace)
            return await self.stages.generate(
                manifest.id, manifest.params, manifest.input_keys, manifest.subjects, conditioning, trace
            )

    def _after_failure(self, job_id: str, attempt: int, exc: BaseException) -> JobManifest:
        if isinstance(exc, ClientError):
            return self.jobs.fail(job_id, exc.to_problem())
        retryable = not isinstance(exc, KissError) or (isinstance(exc, ServerError) and exc.recoverable)
        log.warning("job %s attempt %d failed: %r", job_id, attempt, exc)
        if retryable and attempt < self.max_attempts:
            return self.jobs.update(job_id, status="queued", stage="queued")
        problem = (
            exc.to_problem()
            if isinstance(exc, ServerError)
            else ServerError(f"generation failed after {attempt} attempts: {type(exc).__name__}").to_problem()
        )
        return self.jobs.fail(job_id, problem)
