"""Which stages of this application can run: a job never waits silently on a deployment Serve cannot place.

A deployment whose replicas cannot be scheduled (no node offers the GPUs it asks for) accepts requests
into its handle queue and never answers them. The watch reads Serve's own status of this application's
deployments; a job waiting on a stage that has had no running replica for `placement_timeout_s` fails
with `stage_unavailable` and Serve's reason, and `GET /v1/health` reports it at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from kiss_core.errors import StageUnavailable

T = TypeVar("T")


@dataclass(frozen=True)
class DeploymentState:
    """What Serve says about one deployment: its status, running replicas and its own explanation."""

    status: str
    running: int
    message: str

    @property
    def reason(self) -> str:
        """Why it cannot take work: Serve's message (it says what resources are missing once a replica
        has waited 30 s to be scheduled), else the status."""
        return self.message or f"status {self.status}, no running replica"


StatusReader = Callable[[], dict[str, DeploymentState]]


def serve_status_reader(app_name: str) -> StatusReader:
    """Reads this application's deployments from the Serve controller (a blocking call)."""

    def read() -> dict[str, DeploymentState]:
        from ray import serve
        from ray.serve._private.common import ReplicaState

        application = serve.status().applications.get(app_name)
        if application is None:
            return {}
        return {
            name: DeploymentState(
                status=str(getattr(d.status, "value", d.status)),
                running=int(d.replica_states.get(ReplicaState.RUNNING, 0)),
                message=d.message,
            )
            for name, d in application.deployments.items()
        }

    return read


class PlacementWatch:
    """Remembers since when each deployment has had no running replica.

    One watch per ingress replica serves every job it runs: Serve's status is read at most once per
    `poll_s` however many jobs are waiting (a hundred videos in a generator's queue must not become a
    hundred status calls to the controller every few seconds).
    """

    def __init__(self, read: StatusReader, timeout_s: float, poll_s: float = 5.0):
        self.read = read
        self.timeout_s = timeout_s
        self.poll_s = min(poll_s, timeout_s)
        self.states: dict[str, DeploymentState] = {}
        self._idle_since: dict[str, float] = {}
        self._read_at = -float("inf")
        self._reading: asyncio.Future[dict[str, DeploymentState]] | None = None

    async def refresh(self, max_age_s: float | None = None) -> dict[str, DeploymentState]:
        """Serve's view, read again when older than `max_age_s` (default `poll_s`; 0: now)."""
        max_age = self.poll_s if max_age_s is None else max_age_s
        if time.monotonic() - self._read_at <= max_age:
            return self.states
        if self._reading is None:  # one read in flight, shared by every caller that arrives meanwhile
            self._reading = asyncio.ensure_future(asyncio.to_thread(self.read))
        reading = self._reading
        try:
            states = await asyncio.shield(reading)
        finally:
            if self._reading is reading and reading.done():
                self._reading = None
        now = time.monotonic()
        self._read_at = now
        for name, state in states.items():
            if state.running > 0:
                self._idle_since.pop(name, None)
            else:
                self._idle_since.setdefault(name, now)
        self.states = states
        return states

    def unavailable(self, names: Iterable[str]) -> dict[str, str]:
        """The named deployments without a running replica for longer than the timeout: name -> reason."""
        now = time.monotonic()
        late = {}
        for name in names:
            since = self._idle_since.get(name)
            if since is not None and now - since >= self.timeout_s:
                late[name] = self.states[name].reason
        return late

    async def guard(self, names: tuple[str, ...], response: Awaitable[T]) -> T:
        """Await `response`; fail with StageUnavailable once a stage it needs cannot run."""
        task: asyncio.Future[T] = asyncio.ensure_future(response)
        while True:
            done, _ = await asyncio.wait({task}, timeout=self.poll_s)
            if done:
                return task.result()
            await self.refresh()
            late = self.unavailable(names)
            if late:
                cancel: Any = getattr(response, "cancel", None)
                if callable(cancel):
                    cancel()
                task.cancel()
                reasons = "; ".join(f"{name}: {reason}" for name, reason in late.items())
                raise StageUnavailable(f"no running replica for more than {self.timeout_s:g} s ({reasons})")
