"""Runs stored jobs through the stages without knowing where the stages live.

The same runner drives the Ray Serve graph (stages are deployment handles whose responses are passed
along unresolved, so tensors never come through here) and the in-process pipeline used by unit tests
and the serving-overhead benchmark (stages are plain function calls).

Execution is at-least-once: a runner holds a lease on each job it runs and renews it; a job whose
lease lapsed (its replica died) is recovered by any replica; outputs are idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import random
import secrets
import socket
from collections.abc import Callable
from datetime import timedelta

from kiss_core.errors import ClientError, JobCanceled, KissError, ServerError, unwrap_remote
from kiss_core.jobs.protocol import Stages
from kiss_core.jobs.store import InvalidTransition, JobStore
from kiss_core.jobs.webhooks import WebhookSender, event_for, message_id
from kiss_core.schemas import TERMINAL_STATUSES, JobManifest, JobResult, StageRequest, WebhookDelivery, utcnow
from kiss_core.settings import JobSettings
from kiss_core.tracing import error_trace_id, inject_context, stage_span, trace_id_from

log = logging.getLogger(__name__)


class JobRunner:
    """Runs jobs (identity, generation) with retries, leases, recovery, hand-back and webhooks."""

    def __init__(
        self,
        jobs: JobStore,
        stages: Stages,
        settings: JobSettings,
        *,
        owner: str | None = None,
        webhooks: WebhookSender | None = None,
    ):
        self.jobs = jobs
        self.stages = stages
        self.max_attempts = settings.max_attempts
        self.lease = timedelta(seconds=settings.lease_s)
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.webhooks = webhooks
        self._running: dict[str, asyncio.Task[JobManifest]] = {}
        self._deliveries: set[asyncio.Task[None]] = set()
        # Called with each job this runner completed (the ingress learns durations for its ETAs).
        self.on_complete: list[Callable[[JobManifest], None]] = []

    def running(self) -> int:
        """How many jobs this runner runs now."""
        return len(self._running)

    def start(self, job_id: str) -> asyncio.Task[JobManifest]:
        """Run the job in the background of this event loop (idempotent while it runs)."""
        task = self._running.get(job_id)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self.run(job_id), name=f"job-{job_id}")
            self._running[job_id] = task
            task.add_done_callback(functools.partial(self._forget, job_id))
        return task

    def _forget(self, job_id: str, _task: asyncio.Task[JobManifest]) -> None:
        self._running.pop(job_id, None)

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
            try:
                manifest = await asyncio.to_thread(self._start_attempt, job_id, attempt)
            except InvalidTransition:  # canceled (or ended) while it waited for this attempt
                manifest = await asyncio.to_thread(self.jobs.get, job_id)
                continue
            stop_heartbeat = asyncio.Event()
            heartbeat = asyncio.get_running_loop().create_task(self._hold_lease(job_id, stop_heartbeat))
            try:
                result = await self._attempt(manifest)
            except asyncio.CancelledError:
                raise
            except BaseException as raw:
                exc = unwrap_remote(raw)
                canceled = await asyncio.to_thread(self.jobs.cancel_requested, job_id)
                if isinstance(exc, JobCanceled) or canceled:
                    # Canceled by a client (on any replica): its generator stopped, or its inputs are
                    # gone. Not a failure: no retry, no `failed`, no webhook; the canceled state holds.
                    log.info("job %s was canceled during attempt %d", job_id, attempt)
                    manifest = await asyncio.to_thread(self.jobs.settle_cancel, job_id)
                    continue
                manifest = await asyncio.to_thread(self._after_failure, job_id, attempt, exc)
                ended_here = manifest.status in TERMINAL_STATUSES
                if not ended_here:
                    await asyncio.sleep(min(2.0 * attempt, 10.0))
                continue
            finally:
                stop_heartbeat.set()
                await heartbeat  # lets a renewal in flight finish, so nothing rewrites the lease later
            try:
                manifest = await asyncio.to_thread(self._complete, job_id, result)
                ended_here = True
                for callback in self.on_complete:
                    try:
                        callback(manifest)
                    except Exception:
                        log.exception("on_complete callback failed for job %s", job_id)
            except InvalidTransition:
                manifest = await asyncio.to_thread(self.jobs.get, job_id)
        await asyncio.to_thread(self.jobs.release_lease, job_id)
        if ended_here:
            self.notify(manifest)
        return manifest

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

    def notify(self, manifest: JobManifest) -> asyncio.Task[None] | None:
        """Deliver the terminal job's webhook in the background; never raises, never delays the job."""
        if manifest.webhook_url is None or self.webhooks is None:
            return None
        task = asyncio.get_running_loop().create_task(self._deliver(manifest), name=f"webhook-{manifest.id}")
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)
        return task

    async def _attempt(self, manifest: JobManifest) -> JobResult:
        """One attempt: the conditioning handle goes from the identity stage to generation unresolved."""
        with stage_span("video.run", manifest.trace_context, job_id=manifest.id, attempt=manifest.attempts):
            request = StageRequest.for_job(manifest, inject_context())
            conditioning = self.stages.condition(request)
            return await self.stages.generate(request, conditioning)

    def _start_attempt(self, job_id: str, attempt: int) -> JobManifest:
        """The job goes in_progress for this attempt; InvalidTransition if it was canceled meanwhile (also
        when the cancel raced this write, which then is undone)."""
        manifest = self.jobs.update(job_id, status="in_progress", stage="identity", attempts=attempt)
        if self.jobs.cancel_requested(job_id):
            self.jobs.settle_cancel(job_id)
            raise InvalidTransition(f"job {job_id} was canceled")
        return manifest

    def _complete(self, job_id: str, result: JobResult) -> JobManifest:
        """The job completed, unless it was canceled meanwhile: then InvalidTransition, once the outputs
        the attempt stored are erased (also when the cancel raced this write)."""
        try:
            manifest = self.jobs.complete(job_id, result)
        except InvalidTransition:
            if self.jobs.cancel_requested(job_id):
                self.jobs.settle_cancel(job_id)
            raise
        if self.jobs.cancel_requested(job_id):
            self.jobs.settle_cancel(job_id)
            raise InvalidTransition(f"job {job_id} was canceled")
        return manifest

    def _after_failure(self, job_id: str, attempt: int, exc: BaseException) -> JobManifest:
        if isinstance(exc, ClientError):  # one line, no traceback: the request, not the server, is at fault
            failed = self.jobs.fail(job_id, exc.to_problem())
            trace_id = error_trace_id(exc) or trace_id_from(failed.trace_context) or "-"
            line = "job %s failed: client error code=%s status=%d trace_id=%s"
            log.info(line, job_id, exc.code, exc.status, trace_id)
            return failed
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
