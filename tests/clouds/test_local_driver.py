"""The local cloud driver, against real processes on this machine: no mocks.

Every node started here is a real `/bin/bash boot.sh` process group under pytest's
tmp_path. The `cloud` fixture remembers each group it saw launched (pgid and start time)
and SIGKILLs any survivor when the test ends, pass or fail, so no test leaks a process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from clouds.providers import local
from clouds.providers.base import (
    TAG_CLOUD,
    TAG_CLUSTER,
    TAG_NODE,
    InstanceState,
    NodeSpec,
    PermanentCloudError,
    PermanentErrorKind,
    idempotency_key,
    ray_temp_dir,
)
from clouds.providers.local import PORT_COUNT, LocalProvider, instance_id_for

SLEEPER = "exec sleep 300\n"

# Writes its environment and working folder, leaves a child running in the background
# (it must die with the node), then becomes the long-running node process.
REPORTER = """\
sleep 300 &
echo $! > child.pid
pwd > cwd.txt
env > env.tmp && mv env.tmp env.txt
exec sleep 300
"""


def wait_for(predicate: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {predicate}")
        time.sleep(0.02)


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, pgid, start time) of a pid, or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    rest = raw[raw.rindex(b")") + 2 :].split()
    return rest[0].decode(), int(rest[2]), int(rest[19])


def running(pid: int) -> bool:
    """Exists and has not exited (a zombie only waits to be reaped)."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def live_members(pgid: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        stat = proc_stat(int(name)) if name.isdigit() else None
        if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
            pids.append(int(name))
    return pids


def group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def record(root: Path, node_id: uuid.UUID) -> dict:
    return json.loads((root / str(node_id) / "instance.json").read_text())


@dataclass
class Cloud:
    root: Path
    provider: LocalProvider
    launched: dict[int, int] = field(default_factory=dict)  # pgid -> start time

    def new_provider(self) -> LocalProvider:
        """What a restarted Raydeck builds: same cloud, same root, no memory."""
        return LocalProvider(cloud_id=self.provider.cloud_id, root=self.root, stop_timeout=2.0)

    def launch(
        self,
        script: str = SLEEPER,
        *,
        node_id: uuid.UUID | None = None,
        cluster_id: uuid.UUID | None = None,
        attempt: int = 0,
        provider: LocalProvider | None = None,
    ):
        node = NodeSpec(
            node_id=node_id or uuid.uuid4(),
            cluster_id=cluster_id or uuid.uuid4(),
            name="node",
            instance_type="local",
            image=sys.executable,
            cpus=2,
            memory_mb=512,
            labels={"role": "worker"},
        )
        instance = (provider or self.provider).launch(
            node=node,
            boot_script=script,
            idempotency_key=idempotency_key(node.node_id, attempt),
        )
        data = record(self.root, node.node_id)
        if data.get("pgid"):
            self.launched[data["pgid"]] = data["start_time"]
        return node, instance

    def cleanup(self) -> None:
        for pgid, start_time in self.launched.items():
            stat = proc_stat(pgid)
            # Only a group still led by the process we launched (never a recycled pid).
            if stat is not None and stat[2] == start_time and stat[0] not in ("Z", "X"):
                os.killpg(pgid, signal.SIGKILL)
        for pgid in self.launched:
            wait_for(lambda pgid=pgid: not live_members(pgid))
        local._reap_children()


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    root = tmp_path / "cloud"
    harness = Cloud(root=root, provider=LocalProvider(cloud_id=uuid.uuid4(), root=root))
    harness.provider.stop_timeout = 2.0
    try:
        yield harness
    finally:
        harness.cleanup()


def test_two_nodes_launch_list_terminate_and_rediscover(cloud: Cloud, monkeypatch):
    # A secret in the control plane's environment must not reach node processes.
    monkeypatch.setenv("DATABASE_URL", "postgres://raydeck:hunter2@db/raydeck")
    cluster_a, cluster_b = uuid.uuid4(), uuid.uuid4()
    node_a, inst_a = cloud.launch(REPORTER, cluster_id=cluster_a)
    node_b, inst_b = cloud.launch(REPORTER, cluster_id=cluster_b)

    assert inst_a.instance_id == instance_id_for(node_a.node_id) == f"local-{node_a.node_id}"
    assert inst_a.state == InstanceState.RUNNING
    assert (inst_a.node_id, inst_a.cluster_id) == (node_a.node_id, cluster_a)
    assert inst_a.private_address == "127.0.0.1"
    assert inst_a.launched_at is not None

    dir_a, dir_b = cloud.root / str(node_a.node_id), cloud.root / str(node_b.node_id)
    rec_a, rec_b = record(cloud.root, node_a.node_id), record(cloud.root, node_b.node_id)
    assert rec_a["instance_id"] == inst_a.instance_id
    assert rec_a["tags"] == {
        TAG_CLOUD: str(cloud.provider.cloud_id),
        TAG_CLUSTER: str(cluster_a),
        TAG_NODE: str(node_a.node_id),
        "role": "worker",
    }
    assert (rec_a["cpus"], rec_a["memory_mb"], rec_a["instance_type"]) == (2, 512, "local")
    assert rec_a["pgid"] == rec_a["pid"] == os.getpgid(rec_a["pid"])
    assert rec_a["start_time"] == proc_stat(rec_a["pid"])[2]
    assert (dir_a / "boot.sh").read_text() == REPORTER
    assert (dir_a / "boot.sh").stat().st_mode & 0o777 == 0o700
    assert (dir_a / "boot.log").exists()

    # The boot script ran in its folder, with its ids and its own ports.
    wait_for(lambda: (dir_a / "env.txt").exists() and (dir_b / "env.txt").exists())
    env_a = dict(line.split("=", 1) for line in (dir_a / "env.txt").read_text().splitlines())
    assert (dir_a / "cwd.txt").read_text().strip() == str(dir_a)
    assert env_a["RAYDECK_NODE_ID"] == str(node_a.node_id)
    assert env_a["RAYDECK_CLUSTER_ID"] == str(cluster_a)
    assert env_a["RAYDECK_INSTANCE_ID"] == inst_a.instance_id
    assert env_a["RAYDECK_NODE_DIR"] == str(dir_a)
    assert "DATABASE_URL" not in env_a
    ports_a = [int(env_a[f"RAYDECK_PORT_{i}"]) for i in range(PORT_COUNT)]
    assert ports_a == rec_a["ports"]
    assert len(set(ports_a)) == PORT_COUNT
    assert not set(ports_a) & set(rec_b["ports"])
    # Below the kernel's ephemeral range: no outgoing connection takes one before Ray binds it.
    ephemeral_low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(port < ephemeral_low for port in ports_a + rec_b["ports"])

    # Both listed, and the cluster filter picks one.
    listed = {i.instance_id: i for i in cloud.provider.list_instances()}
    assert set(listed) == {inst_a.instance_id, inst_b.instance_id}
    assert all(i.state == InstanceState.RUNNING for i in listed.values())
    assert [i.instance_id for i in cloud.provider.list_instances(cluster_id=cluster_a)] == [
        inst_a.instance_id
    ]
    assert cloud.provider.list_instances(cluster_id=uuid.uuid4()) == []

    # Terminate A: its whole group goes, including the background child; B is untouched.
    child_a = int((dir_a / "child.pid").read_text())
    assert running(child_a)
    ray_temp = Path(ray_temp_dir(node_a.node_id))  # what Ray wrote on the node
    (ray_temp / "session_latest" / "logs").mkdir(parents=True)
    (ray_temp / "session_latest" / "logs" / "raylet.out").write_text("raylet\n")
    boot_log = (dir_a / "boot.log").read_bytes()
    cloud.provider.terminate(instance_id=inst_a.instance_id)
    assert live_members(rec_a["pgid"]) == []
    assert not running(child_a)
    # The orphaned child's zombie is reaped by init, which may take a moment.
    wait_for(lambda: not group_exists(rec_a["pgid"]))
    with pytest.raises(ProcessLookupError):
        os.killpg(rec_a["pgid"], 0)
    assert running(rec_b["pid"])
    # Its folders are gone; its boot log (the agent's output too) stays with the logs.
    assert not dir_a.exists() and not ray_temp.exists()
    kept = cloud.root / "logs" / str(cluster_a) / str(node_a.node_id) / "boot.log"
    assert kept.read_bytes().startswith(boot_log)
    assert cloud.provider.describe(instance_id=inst_a.instance_id) is None
    cloud.provider.terminate(instance_id=inst_a.instance_id)  # again: nothing to do

    # A restarted Raydeck (new provider object) finds B running, and stops it.
    restarted = cloud.new_provider()
    found = {i.instance_id: i.state for i in restarted.list_instances()}
    assert found == {inst_b.instance_id: InstanceState.RUNNING}
    restarted.terminate(instance_id=inst_b.instance_id)
    assert restarted.describe(instance_id=inst_b.instance_id) is None
    assert restarted.list_instances() == []
    assert sorted(p.name for p in cloud.root.iterdir()) == ["logs"]

    # No stray process: every group this test launched is gone.
    assert set(cloud.launched) == {rec_a["pgid"], rec_b["pgid"]}
    for pgid in cloud.launched:
        wait_for(lambda pgid=pgid: not group_exists(pgid))


def test_relaunch_is_idempotent(cloud: Cloud):
    node, first = cloud.launch(SLEEPER)
    pid = record(cloud.root, node.node_id)["pid"]

    again = cloud.launch(SLEEPER, node_id=node.node_id, cluster_id=node.cluster_id)
    after_restart = cloud.launch(
        SLEEPER, node_id=node.node_id, cluster_id=node.cluster_id, provider=cloud.new_provider()
    )
    # Even a new attempt does not start a second process while the first one lives.
    new_attempt = cloud.launch(SLEEPER, node_id=node.node_id, cluster_id=node.cluster_id, attempt=1)

    assert again[1] == after_restart[1] == new_attempt[1] == first
    assert record(cloud.root, node.node_id)["pid"] == pid
    assert live_members(pid) == [pid]
    assert (cloud.root / str(node.node_id) / "boot.log").read_text().count("launching") == 1


def test_relaunch_after_crash_before_pid_was_recorded_adopts_the_process(cloud: Cloud):
    node, _ = cloud.launch(SLEEPER)
    path = cloud.root / str(node.node_id) / "instance.json"
    data = json.loads(path.read_text())
    pid = data["pid"]
    # As if Raydeck died between Popen and writing the pid.
    path.write_text(json.dumps({**data, "pid": None, "pgid": None, "start_time": None}))

    _, again = cloud.launch(SLEEPER, node_id=node.node_id, cluster_id=node.cluster_id)

    assert again.state == InstanceState.RUNNING
    assert record(cloud.root, node.node_id)["pid"] == pid
    assert live_members(pid) == [pid]


def test_node_that_died_on_its_own_is_stopped(cloud: Cloud):
    node, instance = cloud.launch(SLEEPER)
    pid = record(cloud.root, node.node_id)["pid"]
    os.kill(pid, signal.SIGKILL)  # a crash, not terminate
    wait_for(lambda: not running(pid))  # kill() returns before the process is gone

    assert cloud.provider.describe(instance_id=instance.instance_id).state == InstanceState.STOPPED
    assert [i.state for i in cloud.new_provider().list_instances()] == [InstanceState.STOPPED]

    # Replaying the same launch reports the dead instance rather than resurrecting it...
    _, replay = cloud.launch(SLEEPER, node_id=node.node_id, cluster_id=node.cluster_id)
    assert replay.state == InstanceState.STOPPED
    # ...while a new attempt starts the node again, in the same folder.
    _, retry = cloud.launch(SLEEPER, node_id=node.node_id, cluster_id=node.cluster_id, attempt=1)
    assert retry.state == InstanceState.RUNNING
    assert (cloud.root / str(node.node_id) / "boot.log").read_text().count("launching") == 2

    cloud.provider.terminate(instance_id=instance.instance_id)
    assert cloud.provider.describe(instance_id=instance.instance_id) is None


def test_recycled_pid_is_not_ours(cloud: Cloud):
    node, instance = cloud.launch(SLEEPER)
    pid = record(cloud.root, node.node_id)["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not running(pid))
    local._reap_children()
    # Another program now runs under the recorded pid (start time differs from the record).
    stranger = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True
    )
    try:
        path = cloud.root / str(node.node_id) / "instance.json"
        data = json.loads(path.read_text())
        start = proc_stat(stranger.pid)[2]
        data.update(pid=stranger.pid, pgid=stranger.pid, start_time=start - 1)
        path.write_text(json.dumps(data))

        assert cloud.provider.describe(instance_id=instance.instance_id).state == (
            InstanceState.STOPPED
        )
        cloud.provider.terminate(instance_id=instance.instance_id)

        assert running(stranger.pid)
        assert cloud.provider.describe(instance_id=instance.instance_id) is None
    finally:
        stranger.kill()
        stranger.wait()


def test_terminate_refuses_ids_that_are_not_ours_and_ignores_missing(cloud: Cloud):
    for bad in ("i-0123456789abcdef0", "local-../../etc", "local-not-a-uuid", f"{uuid.uuid4()}"):
        with pytest.raises(PermanentCloudError) as caught:
            cloud.provider.terminate(instance_id=bad)
        assert caught.value.kind == PermanentErrorKind.INVALID_REQUEST
        assert cloud.provider.describe(instance_id=bad) is None

    missing = instance_id_for(uuid.uuid4())
    cloud.provider.terminate(instance_id=missing)
    assert cloud.provider.describe(instance_id=missing) is None
    assert cloud.provider.list_instances() == []


def test_spawn_failure_is_a_permanent_error(cloud: Cloud, monkeypatch):
    monkeypatch.setattr(local, "_BASH", "/nonexistent/bash")
    with pytest.raises(PermanentCloudError) as caught:
        cloud.launch(SLEEPER)
    assert caught.value.kind == PermanentErrorKind.INVALID_REQUEST
    assert "/nonexistent/bash" in caught.value.user_message
    # Its folder is left (the boot script, the record): not gone until a terminate.
    [instance] = cloud.provider.list_instances()
    assert instance.state == InstanceState.STOPPING and not instance.is_gone
    cloud.provider.terminate(instance_id=instance.instance_id)
    assert cloud.provider.list_instances() == []
    assert not (cloud.root / str(instance.node_id)).exists()


def checks(provider: LocalProvider) -> dict[str, tuple[bool, str]]:
    return {c.name: (c.passed, c.message) for c in provider.verify()}


@pytest.fixture
def ray_installed(monkeypatch) -> Callable[[bool], None]:
    real = local.importlib.util.find_spec

    def install(present: bool) -> None:
        def find_spec(name: str, *args, **kwargs):
            if name == "ray":
                return real("json") if present else None
            return real(name, *args, **kwargs)

        monkeypatch.setattr(local.importlib.util, "find_spec", find_spec)

    return install


def test_verify_passes_on_a_writable_root(tmp_path: Path, ray_installed):
    ray_installed(True)
    provider = LocalProvider(cloud_id=uuid.uuid4(), root=tmp_path / "new" / "cloud")
    result = checks(provider)
    assert set(result) == {"Root folder", "Ray installed", "Free disk"}
    assert all(passed for passed, _ in result.values()), result
    assert str(tmp_path / "new" / "cloud") in result["Root folder"][1]
    assert "GiB free" in result["Free disk"][1]
    assert list((tmp_path / "new" / "cloud").iterdir()) == []  # the probe file is gone


@pytest.mark.parametrize("below", [False, True], ids=["root-is-a-file", "root-under-a-file"])
def test_verify_and_launch_with_an_unwritable_root(tmp_path: Path, below: bool):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    root = blocker / "cloud" if below else blocker
    provider = LocalProvider(cloud_id=uuid.uuid4(), root=root)

    passed, message = checks(provider)["Root folder"]
    assert not passed
    assert str(root) in message
    assert "local root" in message

    with pytest.raises(PermanentCloudError) as caught:
        provider.launch(
            node=NodeSpec(
                node_id=uuid.uuid4(), cluster_id=uuid.uuid4(), name="n", instance_type="local"
            ),
            boot_script=SLEEPER,
            idempotency_key="k",
        )
    assert caught.value.kind == PermanentErrorKind.INVALID_REQUEST
    assert str(root) in caught.value.user_message


def test_verify_says_how_to_install_ray(tmp_path: Path, ray_installed):
    ray_installed(False)
    passed, message = checks(LocalProvider(cloud_id=uuid.uuid4(), root=tmp_path))["Ray installed"]
    assert not passed
    assert message == (
        f"Ray is not installed in this Python environment ({sys.executable}): "
        "pip install 'ray[default]'"
    )


def test_verify_low_disk(tmp_path: Path):
    provider = LocalProvider(cloud_id=uuid.uuid4(), root=tmp_path, min_free_bytes=1 << 60)
    passed, message = checks(provider)["Free disk"]
    assert not passed
    assert "GiB free at" in message and str(tmp_path) in message
