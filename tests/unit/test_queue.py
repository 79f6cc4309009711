"""Queue positions and ETAs (kiss_core.jobs.queue), and the store's revisions and queue markers."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from kiss_core.jobs.queue import DurationModel, QueueEntry, QueueView, duration_kind, work_units
from kiss_core.jobs.store import JobStore
from kiss_core.schemas import JobResult, QualityReport, VideoParams, utcnow
from kiss_core.storage import LocalDirStore
from tests.support.mean_face import mean_face_analysis


def entry(
    job_id: str,
    t: float,
    status: str = "queued",
    stage: str = "queued",
    progress: int = 0,
    work: float = 1.0,
    kind: str = "preview",
) -> QueueEntry:
    return QueueEntry(job_id, t, status, stage, progress, kind, work)


def model(rate: float = 10.0, kind: str = "preview") -> DurationModel:
    m = DurationModel()
    m.learn(kind, 1.0, rate)
    return m


def test_unknown_rate_gives_positions_but_no_eta() -> None:
    view = QueueView([entry("a", 1), entry("b", 2)], DurationModel())
    assert view.info(entry("a", 1)).fields() == {"queue_position": 1, "eta_s": None}
    assert view.info(entry("b", 2)).fields() == {"queue_position": 2, "eta_s": None}


def test_positions_follow_creation_order_and_skip_running_and_finished() -> None:
    jobs = [
        entry("run", 0, "in_progress", "generation", 55),
        entry("ident", 1, "in_progress", "identity"),  # not generating yet: waits
        entry("q1", 2),
        entry("done", 3, "completed", "done", 100),
        entry("q2", 4),
    ]
    view = QueueView(jobs, model())
    positions = {e.job_id: view.info(e).queue_position for e in jobs}
    assert positions == {"run": None, "ident": 1, "q1": 2, "done": None, "q2": 3}
    assert view.info(jobs[3]).eta_s is None


def test_eta_adds_up_the_work_ahead_on_one_slot() -> None:
    # rate 10 s per unit; the running job is half-way through its generation (10 % -> 100 %).
    jobs = [entry("run", 0, "in_progress", "generation", 55), entry("q1", 1), entry("q2", 2, work=2.0)]
    view = QueueView(jobs, model(10.0))
    assert view.info(jobs[0]).eta_s == pytest.approx(5.0)
    assert view.info(jobs[1]).eta_s == pytest.approx(5.0 + 10.0)
    assert view.info(jobs[2]).eta_s == pytest.approx(5.0 + 10.0 + 20.0)


def test_eta_spreads_the_work_over_the_generator_slots() -> None:
    jobs = [
        entry("r1", 0, "in_progress", "generation", 10),
        entry("r2", 0.5, "in_progress", "storing", 82),
        entry("q1", 1),
        entry("q2", 2),
    ]
    view = QueueView(jobs, model(10.0), slots=lambda group: 2)
    # slots free at 2 s (r2) and 10 s (r1): q1 starts at 2, ends at 12; q2 starts at 10, ends at 20.
    assert view.info(jobs[2]).eta_s == pytest.approx(12.0)
    assert view.info(jobs[3]).eta_s == pytest.approx(20.0)


def test_jobs_of_another_generator_do_not_count() -> None:
    wan = duration_kind("wan-i2v", "fast")
    m = model(10.0)
    m.learn(wan, 1.0, 100.0)
    jobs = [entry("w", 0, kind=wan), entry("p", 1)]
    view = QueueView(jobs, m, group=lambda kind: kind.partition(":")[0])
    assert view.info(jobs[1]).fields() == {"queue_position": 1, "eta_s": 10.0}
    assert view.info(jobs[0]).fields() == {"queue_position": 1, "eta_s": 100.0}


def test_a_job_missing_from_the_snapshot_queues_behind_older_ones() -> None:
    view = QueueView([entry("q1", 1), entry("q2", 2)], model(10.0))
    assert view.info(entry("new", 3)).fields() == {"queue_position": 3, "eta_s": 30.0}


def test_position_decreases_as_jobs_ahead_finish() -> None:
    jobs = [entry("a", 0, "in_progress", "generation", 30), entry("b", 1), entry("c", 2)]
    seen = []
    while jobs:
        view = QueueView(jobs, model())
        seen.append(view.info(jobs[-1]).queue_position)
        jobs = jobs[1:]
        if jobs:
            jobs[0] = entry(jobs[0].job_id, jobs[0].created_at, "in_progress", "generation", 10)
    assert seen == [2, 1, None]


def test_duration_model_is_a_moving_average_per_kind() -> None:
    m = DurationModel(alpha=0.5)
    m.learn("preview", 2.0, 20.0)
    assert m.estimate("preview", 1.0) == pytest.approx(10.0)
    m.learn("preview", 1.0, 20.0)
    assert m.estimate("preview", 1.0) == pytest.approx(15.0)
    assert m.estimate("wan-i2v:default", 1.0) is None
    m.learn("preview", 0.0, 5.0)  # nothing to learn from
    assert m.observations["preview"] == 2
    assert work_units(832, 480, 120) == pytest.approx(120 * 832 * 480 / 1e6)


def _analyses() -> dict[str, object]:
    return {s: mean_face_analysis(s, (480, 600), (140, 200, 340, 440), 0.0, 0.0) for s in "ab"}


@pytest.fixture
def jobs(tmp_path: Path) -> JobStore:
    return JobStore(LocalDirStore(tmp_path))


def test_revision_counts_every_write_and_markers_follow_the_job(jobs: JobStore) -> None:
    params = VideoParams(seconds=1, fps=8, size="256x144")
    first = jobs.create(params, {"a": b"a", "b": b"b"}, _analyses())  # type: ignore[arg-type]
    second = jobs.create(params, {"a": b"a", "b": b"b"}, _analyses())  # type: ignore[arg-type]
    assert first.revision == 1 and jobs.get(first.id).revision == 1
    assert [m.id for m in jobs.queued()] == [first.id, second.id]
    running = jobs.update(first.id, status="in_progress", stage="identity")
    moved = jobs.update(first.id, stage="generation", progress=10)
    assert (running.revision, moved.revision) == (2, 3)
    result = JobResult(
        output="video",
        width=256,
        height=144,
        fps=8,
        frames=8,
        seconds=1,
        contact_frame=4,
        keys={},
        quality=QualityReport(threshold=0.9, subjects=[]),
        timings={"render": 4.0},
    )
    done = jobs.complete(first.id, result)
    assert done.revision == 4
    assert [m.id for m in jobs.queued()] == [second.id], "a finished job leaves the queue"
    jobs.delete(second.id)
    assert jobs.queued() == [] and jobs.store.list("queue/") == []

    learned = DurationModel()
    assert learned.learn_job(done, "preview")
    assert learned.estimate("preview", work_units(256, 144, 8)) == pytest.approx(4.0)


def test_orphan_markers_are_pruned_but_fresh_ones_kept(jobs: JobStore) -> None:
    from kiss_core.keys import queue_key

    jobs.store.put(queue_key(utcnow() - timedelta(minutes=5), "video_0123abcd"), b"")
    jobs.store.put(queue_key(utcnow(), "video_4567abcd"), b"")  # its manifest is being written
    assert jobs.queued() == []
    assert [k.rpartition("-")[2] for k in jobs.store.list("queue/")] == ["video_4567abcd"]
