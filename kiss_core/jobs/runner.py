"""Runs stored jobs through the stages without knowing where the stages live.

The same runner drives the Ray Serve graph (stages are deployment handles whose responses are passed
along unresolved, so tensors never come through here) and the in-process pipeline used by unit tests
and the serving-overhead benchmark (stages are plain function calls).

Execution is at-least-once: a runner holds a lease on each job it runs and renews it; a job whose
lease lapsed (its replica died) is recovered by any replica; outputs are idempotent.

Webhooks are at-least-once too: before a job with a `webhook_url` goes terminal, its runner writes a
claim under `webhooks/pending/{job_id}` (owner, until), and the terminal write itself records the
delivery as pending; the runner holds the claim while it delivers and deletes it once the delivery has
its outcome. A claim whose owner stopped renewing it (its replica died, or handed it back at shutdown)
is taken by the next recovery pass of any replica, which delivers the event again under the same
`webhook-id`, so a receiver that de-duplicates sees one event.
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
from datetime import datetime, timedelta
from typing import Any

from kiss_core.errors import (
    AttemptSuperseded,
    ClientError,
    JobCanceled,
    JobNotFound,
    KissError,
    ServerError,
    unwrap_remote,
)
from kiss_core.jobs.protocol import Stages
from kiss_core.jobs.store import InvalidTransition, JobStore
from kiss_core.jobs.webhooks import EVENT_COMPLETED, EVENT_FAILED, WebhookSender, event_for, message_id
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
        self._deliveries: dict[str, asyncio.Task[None]] = {}  # job id -> its webhook delivery here
        # Called with each job this runner completed (the ingress learns durations for its ETAs).
        self.on_complete: list[Callable[[JobManifest], None]] = []

    def running(self) -> int:
        """How many jobs this runner runs now."""
        return len(self._running)

    def start(self, job_id: str, handed_back: int | None = None) -> asyncio.Task[JobManifest]:
        """Run the job in the background of this event loop (idempotent while it runs); `handed_back`:
        the attempt another runner gave back (`hand_back`), which this one runs again."""
        task = self._running.get(job_id)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self.run(job_id, handed_back), name=f"job-{job_id}")
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
        of after the lease would have lapsed. The lease also names the attempt given back: the
        generator may still be rendering it (a cancel cannot stop a render mid-step) and one write of
        its progress, read before this one, can land after it and put the attempt count back; the
        runner that takes the job over goes by the lease, which only runners write.
        """
        handed = []
        for job_id, delivery in list(self._deliveries.items()):  # another replica delivers them at once
            delivery.cancel()
            await asyncio.gather(delivery, return_exceptions=True)
            await asyncio.to_thread(self.jobs.write_webhook_claim, job_id, self.owner, utcnow())
        for job_id, task in list(self._running.items()):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            manifest = await asyncio.to_thread(self.jobs.get, job_id)
            interrupted = manifest.attempts if manifest.status == "in_progress" else None
            if interrupted is not None:
                await asyncio.to_thread(
                    self.jobs.update,
                    job_id,
                    status="queued",
                    stage="queued",
                    attempts=max(0, interrupted - 1),
                )
            if manifest.status not in TERMINAL_STATUSES:
                await asyncio.to_thread(self.jobs.write_lease, job_id, self.owner, utcnow(), interrupted)
                handed.append(job_id)
        return handed

    async def run(self, job_id: str, handed_back: int | None = None) -> JobManifest:
        """At-least-once: retry what may be transient, fail at once on what cannot change.

        Storage calls run in threads: an S3 server that is slow or retrying must not stall the loop.
        `handed_back`: the attempt a leaving runner gave back; the first attempt here reuses its number.
        """
        manifest = await asyncio.to_thread(self.jobs.get, job_id)
        ended_here = False  # only the runner that makes the job terminal sends its webhook
        while manifest.status not in TERMINAL_STATUSES:
            attempt = manifest.attempts + 1
            if handed_back is not None:
                attempt, handed_back = max(1, min(attempt, handed_back)), None
            await asyncio.to_thread(self.jobs.write_lease, job_id, self.owner, utcnow() + self.lease)
            try:
                manifest = await asyncio.to_thread(self._start_attempt, job_id, attempt)
            except InvalidTransition:  # canceled (or ended) while it waited for this attempt
                manifest = await asyncio.to_thread(self.jobs.get, job_id)
                continue
            stop_heartbeat = asyncio.Event()
            heartbeat = asyncio.get_running_loop().create_task(
                self._hold_lease(job_id, stop_heartbeat, self.jobs.write_lease, self.jobs.holds_lease)
            )
            try:
                result = await self._attempt(manifest)
            except asyncio.CancelledError:
                raise
            except BaseException as raw:
                exc = unwrap_remote(raw)
                if isinstance(exc, AttemptSuperseded):  # another runner has the job now, and its lease
                    log.info("job %s attempt %d stopped: %s", job_id, attempt, exc)
                    return await asyncio.to_thread(self.jobs.get, job_id)
                canceled = await asyncio.to_thread(self.jobs.cancel_requested, job_id)
                if isinstance(exc, JobCanceled) or canceled:
                    # Canceled by a client (on any replica): its generator stopped, or its inputs are
                    # gone. Not a failure: no retry, no `failed`, no webhook; the canceled state holds.
                    log.info("job %s was canceled during attempt %d", job_id, attempt)
                    manifest = await asyncio.to_thread(self.jobs.settle_cancel, job_id)
                    continue
                manifest = await asyncio.to_thread(
                    self._after_failure, job_id, attempt, exc, manifest.webhook_url
                )
                ended_here = manifest.status in TERMINAL_STATUSES
                if not ended_here:
                    await asyncio.sleep(min(2.0 * attempt, 10.0))
                continue
            finally:
                stop_heartbeat.set()
                await heartbeat  # lets a renewal in flight finish, so nothing rewrites the lease later
            try:
                manifest = await asyncio.to_thread(self._complete, job_id, result, manifest.webhook_url)
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
                self.start(manifest.id, lease.handed_back if lease is not None else None)
                started.append(manifest.id)
        await self.recover_webhooks()
        return started

    async def recover_webhooks(self) -> list[str]:
        """Deliver the pending webhooks whose claim lapsed (the replica delivering them died), claiming
        each first as `recover` claims jobs; claims of jobs that are gone, canceled or already have their
        outcome are deleted. Ids of the deliveries started here."""
        if self.webhooks is None:
            return []
        started = []
        for job_id in await asyncio.to_thread(self.jobs.pending_webhooks):
            if job_id in self._deliveries:
                continue
            claim = await asyncio.to_thread(self.jobs.read_webhook_claim, job_id)
            if claim is not None and claim.until > utcnow():
                continue
            try:
                manifest = await asyncio.to_thread(self.jobs.get, job_id)
            except (JobNotFound, ValueError):
                await asyncio.to_thread(self.jobs.clear_webhook_claim, job_id)
                continue
            if manifest.status not in TERMINAL_STATUSES:
                continue  # claimed just before its terminal write: whoever ends the job delivers it
            done = manifest.webhook is not None and manifest.webhook.status != "pending"
            if manifest.status == "canceled" or manifest.webhook_url is None or done:
                await asyncio.to_thread(self.jobs.clear_webhook_claim, job_id)
                continue
            await asyncio.to_thread(self.jobs.write_webhook_claim, job_id, self.owner, utcnow() + self.lease)
            await asyncio.sleep(random.uniform(0.2, 0.5))
            claimed = await asyncio.to_thread(self.jobs.read_webhook_claim, job_id)
            if claimed is not None and claimed.owner == self.owner and job_id not in self._deliveries:
                log.info("recovering the webhook of job %s (claim: %s)", job_id, claim)
                self.notify(manifest)
                started.append(job_id)
        return started

    def notify(self, manifest: JobManifest) -> asyncio.Task[None] | None:
        """Deliver the terminal job's webhook in the background; never raises, never delays the job."""
        if manifest.webhook_url is None or self.webhooks is None:
            return None
        task = asyncio.get_running_loop().create_task(self._deliver(manifest), name=f"webhook-{manifest.id}")
        self._deliveries[manifest.id] = task
        task.add_done_callback(functools.partial(self._delivered, manifest.id))
        return task

    def _delivered(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self._deliveries.get(job_id) is task:
            del self._deliveries[job_id]

    def _pending_webhook(
        self, job_id: str, webhook_url: str | None, event: str
    ) -> dict[str, WebhookDelivery]:
        """Before a terminal write: claim the job's webhook (so it survives this replica) and return the
        pending delivery the terminal write records (nothing when the job has no webhook)."""
        if webhook_url is None or self.webhooks is None:
            return {}
        self.jobs.write_webhook_claim(job_id, self.owner, utcnow() + self.lease)
        pending = WebhookDelivery(event=event, message_id=message_id(job_id, event), status="pending")
        return {"webhook": pending}

    async def _attempt(self, manifest: JobManifest) -> JobResult:
        """One attempt: the conditioning handle goes from the identity stage to generation unresolved."""
        with stage_span("video.run", manifest.trace_context, job_id=manifest.id, attempt=manifest.attempts):
            request = StageRequest.for_job(manifest, inject_context(), runner=self.owner)
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

    def _complete(self, job_id: str, result: JobResult, webhook_url: str | None = None) -> JobManifest:
        """The job completed, unless it was canceled meanwhile: then InvalidTransition, once the outputs
        the attempt stored are erased (also when the cancel raced this write)."""
        pending = self._pending_webhook(job_id, webhook_url, EVENT_COMPLETED)
        try:
            try:
                manifest = self.jobs.complete(job_id, result, **pending)
            except InvalidTransition:
                if self.jobs.cancel_requested(job_id):
                    self.jobs.settle_cancel(job_id)
                raise
            if self.jobs.cancel_requested(job_id):
                self.jobs.settle_cancel(job_id)
                raise InvalidTransition(f"job {job_id} was canceled")
        except InvalidTransition:
            if pending:
                self.jobs.clear_webhook_claim(job_id)
            raise
        return manifest

    def _after_failure(
        self, job_id: str, attempt: int, exc: BaseException, webhook_url: str | None = None
    ) -> JobManifest:
        if isinstance(exc, ClientError):  # one line, no traceback: the request, not the server, is at fault
            failed = self._fail(job_id, exc.to_problem(), webhook_url)
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
        return self._fail(job_id, problem, webhook_url)

    def _fail(self, job_id: str, problem: dict[str, Any], webhook_url: str | None) -> JobManifest:
        pending = self._pending_webhook(job_id, webhook_url, EVENT_FAILED)
        try:
            return self.jobs.fail(job_id, problem, **pending)
        except InvalidTransition:
            if pending:
                self.jobs.clear_webhook_claim(job_id)
            raise

    async def _hold_lease(
        self,
        job_id: str,
        stop: asyncio.Event,
        write: Callable[[str, str, datetime], object],
        held: Callable[[str, str], bool] | None = None,
    ) -> None:
        """Renews this runner's lease (a job's, or its webhook claim) while the work runs; if this
        process dies, the lease lapses. With `held`, a lease another runner took meanwhile (this one
        lapsed while storage was away) is left to it rather than taken back: its attempt goes on, and
        this one's generator stops at its next progress report."""

        def renew() -> bool:
            if held is not None and not held(job_id, self.owner):
                return False
            write(job_id, self.owner, utcnow() + self.lease)
            return True

        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.lease.total_seconds() / 3)
                return
            try:
                if not await asyncio.to_thread(renew):
                    log.info("job %s is another runner's now: its lease is not renewed here", job_id)
                    return
            except Exception:  # storage briefly down: the next renewal may still make it in time
                log.warning("could not renew the lease of job %s", job_id, exc_info=True)

    async def _deliver(self, manifest: JobManifest) -> None:
        assert self.webhooks is not None and manifest.webhook_url is not None
        event = event_for(manifest, utcnow(), self.webhooks.settings.public_base_url)
        msg_id = message_id(manifest.id, str(event["type"]))

        async def record(delivery: WebhookDelivery) -> None:
            await asyncio.to_thread(self.jobs.update, manifest.id, webhook=delivery)

        stop = asyncio.Event()
        claim = asyncio.get_running_loop().create_task(
            self._hold_lease(manifest.id, stop, self.jobs.write_webhook_claim)
        )
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
        except asyncio.CancelledError:  # shutting down: the claim stays, another replica delivers
            stop.set()
            await asyncio.gather(claim, return_exceptions=True)
            raise
        except Exception:
            log.exception("webhook delivery for job %s failed", manifest.id)
        stop.set()
        await claim
        try:  # the outcome is recorded: nothing is pending any more
            await asyncio.to_thread(self.jobs.clear_webhook_claim, manifest.id)
        except Exception:  # the claim lapses; a later pass finds the outcome recorded and deletes it
            log.warning("could not clear the webhook claim of job %s", manifest.id, exc_info=True)
