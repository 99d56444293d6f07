"""The head's activity signals, its idle clock and the dead-man's switch, in-process."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from raydeck_agent import activity, ray_status
from raydeck_agent.activity import Activity, IdleClock
from raydeck_agent.deadman import DeadMansSwitch

ONE, TWO = "5f0c8a1e-0000-0000-0000-000000000001", "5f0c8a1e-0000-0000-0000-000000000002"
QUIET = {"running_jobs": 0, "running_drivers": 0, "pending_demand": []}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_gateway_connections_are_noted_from_any_thread() -> None:
    clock = Clock()
    signals = Activity(clock=clock)
    assert signals.last_connection_at is None
    threads = [threading.Thread(target=signals.note_connection) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert signals.last_connection_at == datetime.fromtimestamp(clock.now, tz=UTC)
    # The module's shared instance, as the gateway uses it.
    activity.note_connection()
    assert isinstance(activity.last_connection_at, datetime)


def test_the_idle_clock_counts_from_the_last_use() -> None:
    clock = Clock()
    signals = Activity(clock=clock)
    idle = IdleClock(signals, clock=clock)
    idle.observe({**QUIET, "running_jobs": 1})
    assert idle.idle_seconds() == 0
    clock.now += 30
    idle.observe(QUIET)
    assert idle.idle_seconds() == 30
    signals.note_connection()
    clock.now += 10
    assert idle.idle_seconds() == 10
    report = idle.report(QUIET)
    assert report["running_jobs"] == 0 and report["pending_demand"] == 0
    assert report["last_connection_at"] == datetime.fromtimestamp(clock.now - 10, UTC).isoformat()
    # Ray's state unknown (the dashboard did not answer): never idle.
    idle.observe({})
    assert idle.idle_seconds() == 0


def test_workers_are_idle_per_node() -> None:
    clock = Clock()
    idle = IdleClock(Activity(clock=clock), clock=clock)
    idle.observe({**QUIET, "node_activity": {"w1": True, "w2": False}})
    clock.now += 20
    idle.observe({**QUIET, "node_activity": {"w1": False, "w2": False}})
    assert idle.node_idle_seconds() == {"w1": 20.0, "w2": 20.0}
    clock.now += 5
    idle.observe({**QUIET, "node_activity": {"w1": True}})  # w2 left the cluster
    assert idle.node_idle_seconds() == {"w1": 0.0}


def test_node_activity_maps_ray_nodes_to_raydeck_node_ids() -> None:
    nodes = [
        {
            "node_id": "a",
            "node_name": ONE,
            "node_ip": "10.0.0.1",
        },
        {
            "node_id": "b",
            "node_name": TWO,
            "node_ip": "10.0.0.2",
        },
        {"node_id": "c", "node_name": "10.0.0.3", "node_ip": "10.0.0.3"},  # not ours
    ]
    assert ray_status.node_activity(nodes, {"b"}) == {
        ONE: False,
        TWO: True,
    }


def test_the_dead_mans_switch_needs_both_silence_and_idleness() -> None:
    switch = DeadMansSwitch(seconds=600)
    assert not switch.due(unreachable_for=None, idle_for=9999)
    assert not switch.due(unreachable_for=599, idle_for=9999)
    assert not switch.due(unreachable_for=9999, idle_for=599)
    assert switch.due(unreachable_for=600, idle_for=600)
    assert switch.reason(720) == "control plane unreachable for 12 min while idle"
    assert not DeadMansSwitch(seconds=0).due(unreachable_for=9999, idle_for=9999)


def test_an_open_ssh_session_keeps_the_cluster_busy_and_is_named() -> None:
    """However quiet its user, an SSH tunnel through the gateway is use until it closes;
    the control plane's "why not idle" line says so."""

    from clusters.live import HeadReport
    from clusters.services.idle import report_reasons

    clock = Clock()
    signals = Activity(clock=clock)
    idle = IdleClock(signals, clock=clock)
    idle.observe(QUIET)
    signals.session_opened("ssh")
    clock.now += 3600  # an hour of thinking, the session still open
    assert idle.idle_seconds() == 0
    report = idle.report(QUIET)
    assert report["ssh_last_active_at"] == datetime.fromtimestamp(clock.now, UTC).isoformat()
    now = datetime.fromtimestamp(clock.now, UTC)
    head = HeadReport(at=now, ray={}, activity={**report, "drivers": 0})
    _, touches = report_reasons(head, now)
    assert touches == {"SSH session active": now}

    signals.session_closed("ssh")
    clock.now += 60
    assert idle.idle_seconds() == 60  # idle from the moment it closed
