"""A head takes a job from its heartbeat's orders, submits it to its real Ray, and
reports the driver running and ended at once, not at its next heartbeat: with the
interval at 300 s, both reports still arrive within seconds. Stand-in: the fake control
plane (tests/agent/fake_control_plane.py) in place of Raydeck's server."""

from __future__ import annotations

from typing import Any

from .conftest import short_temp_dir, wait_for

SUBMISSION = "raydeck-test-prompt-report"


def reported(node, status: str) -> bool:
    return any(
        hb.get("reports", {})
        .get("jobs", {})
        .get("submissions", {})
        .get(SUBMISSION, {})
        .get("status")
        == status
        for hb in list(node.heartbeats)
    )


def test_a_jobs_start_and_end_are_reported_at_once_not_at_the_next_heartbeat(
    control_plane, spawn
) -> None:
    head = control_plane.add_node(
        role="head",
        num_cpus=1,
        memory_mb=512,
        temp_dir=short_temp_dir(),
        heartbeat_interval=300,
    )
    order: dict[str, Any] = {
        "submission_id": SUBMISSION,
        "entrypoint": "python -c \"import time; time.sleep(3); print('done')\"",
    }
    head.orders = {"jobs": {"submit": [order]}}
    run = spawn(control_plane, head)
    # The first heartbeat ("starting") carries the orders; "ready" is sent when Ray is up.
    wait_for(
        lambda: "ready" in head.states() or run.proc.poll() is not None, 120, "the head to be ready"
    )
    assert run.proc.poll() is None, run.output()
    ready_beats = len(head.heartbeats)
    wait_for(lambda: reported(head, "RUNNING"), 60, "the driver reported running")
    wait_for(lambda: reported(head, "SUCCEEDED"), 60, "the driver reported ended")
    # Those reports came in heartbeats of their own, long before the interval was up.
    assert len(head.heartbeats) > ready_beats
    assert run.proc.poll() is None, run.output()
