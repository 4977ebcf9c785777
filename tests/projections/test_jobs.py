"""The jobs fold: states, attempts, times, GPU time, charges and endings."""

from __future__ import annotations

import json
from datetime import timedelta

from dante.projections.jobs import JOBS, JOBS_PROJECTION
from dante.projections.tables import Changed, to_ms
from dante.schemas import events as ev
from dante.schemas.values import DockerPayload, FileRef, JobRequirements
from tests.factories import NOW, _result, _tick, make, submitted
from tests.projections.helpers import fold, fold_changes


def at(minutes: int) -> dict[str, object]:
    return {"at": NOW + timedelta(minutes=minutes)}


def assigned(attempt: int = 1, provider: str = "prv-1", minutes: int = 1) -> ev.JobAssigned:
    return make(
        ev.JobAssigned,
        job_id="job-1",
        attempt=attempt,
        provider_id=provider,
        provider_owner="bob",
        gpu_indices=[0, 1],
        price=500_000,
        fee_bps=500,
        hold=1_000_000,
        **at(minutes),
    )


def usage(attempt: int = 1, *tick_seqs: int) -> ev.UsageRecorded:
    return make(
        ev.UsageRecorded,
        job_id="job-1",
        attempt=attempt,
        ticks=[_tick(seq) for seq in tick_seqs or (1,)],
    )


def charged(amount: int, job_id: str = "job-1") -> ev.FundsCharged:
    return make(
        ev.FundsCharged,
        wallet_id="alice",
        job_id=job_id,
        attempt=1,
        amount=amount,
        usage_seq=2,
        total_gpu_ms=10_000,
        price=500_000,
        fee_bps=500,
        provider_wallet="bob",
    )


def test_a_submission_queues_the_job_with_its_requirements() -> None:
    event = make(
        ev.JobSubmitted,
        job_id="job-1",
        renter="alice",
        name="train",
        requirements=JobRequirements(gpu_count=2, gpu_model="H100", min_vram_gb=80, max_price=9),
        payload=DockerPayload(image="ghcr.io/acme/train:1"),
    )
    view, changes = fold_changes(JOBS_PROJECTION, [event])
    row = view.jobs["job-1"]
    assert (row.renter, row.name, row.state, row.attempts) == ("alice", "train", "queued", 0)
    assert (row.gpu_count, row.gpu_model, row.min_vram_gb, row.max_price_udgpu) == (
        2,
        "H100",
        80,
        9,
    )
    assert json.loads(row.requirements_json)["gpu_model"] == "H100"
    assert (row.payload_kind, row.image, row.interpreter) == (
        "docker",
        "ghcr.io/acme/train:1",
        None,
    )
    assert (row.submitted_seq, row.submitted_at_ms) == (1, to_ms(NOW))
    assert list(changes) == [Changed(JOBS.name, "job-1")]
    script = fold(JOBS_PROJECTION, [submitted()]).jobs["job-1"]
    assert (script.payload_kind, script.image, script.interpreter) == ("script", None, "python3")


def test_a_job_runs_through_assignment_start_usage_charges_and_completion() -> None:
    result = _result()
    view = fold(
        JOBS_PROJECTION,
        [
            submitted(),
            make(ev.JobQueued, job_id="job-1", code="insufficient_funds", reason="needs 5 dGPU"),
            assigned(),
            make(ev.JobAccepted, job_id="job-1", attempt=1),
            make(ev.JobStarted, job_id="job-1", attempt=1, **at(2)),
            usage(1, 1, 2),
            charged(1388),
            usage(1, 3),
            charged(1000),
            make(ev.JobCompleted, job_id="job-1", attempt=1, results=result, **at(9)),
        ],
    )
    row = view.jobs["job-1"]
    assert (row.state, row.attempts, row.provider_id, row.provider_owner) == (
        "completed",
        1,
        "prv-1",
        "bob",
    )
    assert (row.queue_code, row.queue_reason) == (None, "")
    assert json.loads(row.gpu_indices_json) == [0, 1]
    assert (row.price_udgpu, row.fee_bps, row.accepted) == (500_000, 500, True)
    assert (row.assigned_at_ms, row.started_at_ms, row.finished_at_ms) == (
        to_ms(NOW + timedelta(minutes=1)),
        to_ms(NOW + timedelta(minutes=2)),
        to_ms(NOW + timedelta(minutes=9)),
    )
    assert (row.gpu_ms, row.attempt_gpu_ms, row.last_tick_seq) == (30_000, 30_000, 3)
    assert row.charged_udgpu == 2388
    assert (row.exit_code, row.end_code, row.end_reason) == (0, None, "")
    assert row.results_json is not None
    assert FileRef(**json.loads(row.results_json)) == result


def test_the_queue_reason_is_kept_until_the_job_is_placed() -> None:
    queued = make(ev.JobQueued, job_id="job-1", code="insufficient_funds", reason="needs 5 dGPU")
    row = fold(JOBS_PROJECTION, [submitted(), queued]).jobs["job-1"]
    assert (row.state, row.queue_code, row.queue_reason) == (
        "queued",
        "insufficient_funds",
        "needs 5 dGPU",
    )


def test_a_requeue_clears_the_placement_and_gpu_time_adds_up_over_attempts() -> None:
    view = fold(
        JOBS_PROJECTION,
        [
            submitted(),
            assigned(),
            make(ev.JobStarted, job_id="job-1", attempt=1, **at(2)),
            usage(1, 1),
            make(ev.JobDeclined, job_id="job-1", attempt=1),
            make(
                ev.JobRequeued,
                job_id="job-1",
                attempt=1,
                next_attempt=2,
                provider_id="prv-1",
                reason="provider offline",
            ),
        ],
    )
    row = view.jobs["job-1"]
    assert (row.state, row.provider_id, row.gpu_indices_json, row.attempts) == (
        "queued",
        None,
        "[]",
        1,
    )
    assert (row.queue_code, row.queue_reason) == ("provider_lost", "provider offline")
    view = fold(
        JOBS_PROJECTION,
        [
            submitted(),
            assigned(),
            make(ev.JobStarted, job_id="job-1", attempt=1, **at(2)),
            usage(1, 1),
            make(ev.JobRequeued, job_id="job-1", attempt=1, next_attempt=2, provider_id="prv-1"),
            assigned(attempt=2, provider="prv-2", minutes=5),
            make(ev.JobStarted, job_id="job-1", attempt=2, **at(6)),
            usage(2, 1),
            usage(2, 2),
        ],
    )
    row = view.jobs["job-1"]
    assert (row.state, row.attempts, row.provider_id) == ("running", 2, "prv-2")
    assert (row.gpu_ms, row.attempt_gpu_ms, row.last_tick_seq) == (30_000, 20_000, 2)
    assert row.started_at_ms == to_ms(NOW + timedelta(minutes=2))
    assert row.attempt_started_at_ms == to_ms(NOW + timedelta(minutes=6))


def test_each_ending_sets_its_state_time_and_reason() -> None:
    failed = fold(
        JOBS_PROJECTION,
        [submitted(), make(ev.JobFailed, job_id="job-1", reason="exit code 3", exit_code=3)],
    ).jobs["job-1"]
    assert (failed.state, failed.end_reason, failed.exit_code) == ("failed", "exit code 3", 3)
    assert failed.finished_at_ms == to_ms(NOW)
    cancelled = fold(
        JOBS_PROJECTION,
        [
            submitted(),
            make(ev.JobCancelRequested, job_id="job-1", by="alice"),
            make(ev.JobCancelled, job_id="job-1", reason="by renter", **at(3)),
        ],
    ).jobs["job-1"]
    assert (cancelled.state, cancelled.end_reason, cancelled.cancel_requested) == (
        "cancelled",
        "by renter",
        True,
    )
    assert cancelled.finished_at_ms == to_ms(NOW + timedelta(minutes=3))
    stopped = fold(
        JOBS_PROJECTION,
        [
            submitted(),
            make(ev.JobStopped, job_id="job-1", code="insufficient_funds", reason="no funds"),
            make(ev.JobResultsStored, job_id="job-1", attempt=1, results=_result(), exit_code=137),
        ],
    ).jobs["job-1"]
    assert (stopped.state, stopped.end_code, stopped.end_reason) == (
        "stopped",
        "insufficient_funds",
        "no funds",
    )
    assert (stopped.exit_code, stopped.results_json is not None) == (137, True)


def test_a_declined_attempt_alone_changes_nothing() -> None:
    view, changes = fold_changes(
        JOBS_PROJECTION, [submitted(), assigned(), make(ev.JobDeclined, job_id="job-1", attempt=1)]
    )
    assert not changes
    assert view.jobs["job-1"].state == "assigned"


def test_charges_for_a_job_never_submitted_are_shown_not_hidden() -> None:
    view = fold(JOBS_PROJECTION, [charged(5, "job-x")])
    row = view.jobs["job-x"]
    assert (row.state, row.renter, row.charged_udgpu, row.submitted_seq) == ("unknown", "", 5, 1)
