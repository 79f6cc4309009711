"""The placement watch on a scripted Serve status (Serve's controller is the edge; the real one is in
tests/serve/test_placement.py): a stage without a running replica fails the wait after the timeout."""

from __future__ import annotations

import asyncio

import pytest

from deployments.placement import DeploymentState, PlacementWatch
from kiss_core.errors import StageUnavailable

PENDING = "Deployment 'VideoGenerator' has 1 replicas that have taken more than 30s to be scheduled."


def status(generator_running: int) -> dict[str, DeploymentState]:
    return {
        "IdentityEncoder": DeploymentState("HEALTHY", 1, ""),
        "VideoGenerator": DeploymentState(
            "UPDATING", generator_running, PENDING if not generator_running else ""
        ),
    }


def test_a_wait_on_a_stage_that_never_runs_fails_with_serves_reason() -> None:
    watch = PlacementWatch(lambda: status(0), timeout_s=0.3, poll_s=0.05)

    async def never() -> None:
        await asyncio.Event().wait()

    with pytest.raises(
        StageUnavailable, match=r"more than 0\.3 s \(VideoGenerator: Deployment 'VideoGenerator'"
    ):
        asyncio.run(watch.guard(("IdentityEncoder", "VideoGenerator"), never()))


def test_a_stage_with_a_running_replica_is_awaited_however_long_it_takes() -> None:
    watch = PlacementWatch(lambda: status(1), timeout_s=0.1, poll_s=0.05)

    async def slow() -> str:
        await asyncio.sleep(0.5)
        return "video"

    assert asyncio.run(watch.guard(("VideoGenerator",), slow())) == "video"


def test_the_clock_restarts_when_a_replica_comes_up() -> None:
    running = {"now": 0}
    watch = PlacementWatch(lambda: status(running["now"]), timeout_s=0.2, poll_s=0.05)

    async def scenario() -> dict[str, str]:
        await watch.refresh()
        await asyncio.sleep(0.25)
        assert "VideoGenerator" in watch.unavailable(["VideoGenerator"])
        running["now"] = 1
        await watch.refresh(max_age_s=0)
        running["now"] = 0
        await watch.refresh(max_age_s=0)
        return watch.unavailable(["VideoGenerator", "IdentityEncoder"])

    assert asyncio.run(scenario()) == {}


def test_many_waiting_jobs_share_one_status_read_per_poll() -> None:
    reads = {"count": 0}

    def read() -> dict[str, DeploymentState]:
        reads["count"] += 1
        return status(1)

    watch = PlacementWatch(read, timeout_s=10, poll_s=0.2)

    async def video() -> str:
        await asyncio.sleep(1.0)
        return "video"

    async def hundred_jobs() -> list[str]:
        return await asyncio.gather(*(watch.guard(("VideoGenerator",), video()) for _ in range(100)))

    assert asyncio.run(hundred_jobs()) == ["video"] * 100
    # Unshared, each of the 100 guards would read every 0.2 s: ~500 reads. Shared: about one per 0.2 s.
    assert 1 <= reads["count"] <= 25, f"{reads['count']} status reads for 100 waiting jobs"
