"""--engine ray on a two-node Ray cluster on the loopback interface, with a worker killed mid-build.

Marked ``cluster`` (a minute or two; the default run leaves it out): ``pytest -m cluster tests/test_ray_cluster.py``,
which ``scripts/test.sh`` runs once after the suite. The nodes are ``ray start`` processes with their own temporary
folder and free ports, so other Ray runtimes on the machine are untouched; every process they start carries a marker
in its environment, and the teardown stops exactly those.
"""

import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from test_ray_engine import SMALL, digest  # noqa: E402

from dataset_builder.build import BuildConfig, build  # noqa: E402
from dataset_builder.ray_engine import PACKAGE_ROOT  # noqa: E402
from dataset_builder.sources import Subject, pseudo_subjects  # noqa: E402

pytestmark = pytest.mark.cluster
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test's loaders travel to the nodes' workers
RAY = str(Path(sys.executable).with_name("ray"))
PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--metrics-export-port", "--runtime-env-agent-port",
              "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port")  # fmt: skip


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports that are free now (bound, then released)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def marked_pids(marker: str) -> list[int]:
    """Processes whose environment holds ``CHEXANATOMY_TEST_CLUSTER=marker``: what this test's nodes started."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes() if entry.name.isdigit() else b""
            if f"CHEXANATOMY_TEST_CLUSTER={marker}".encode() in environ:
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


def start_node(args: list[str], env: dict) -> None:
    flags = [f"{flag}={port}" for flag, port in zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True)]
    command = [RAY, "start", *args, *flags, "--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


@pytest.fixture()
def cluster():
    """(address, environment for a driver) of a head node and a second node (1 CPU each, the second with a resource of
    its own).

    Ray's token authentication is off for this loopback-only cluster: its nodes would otherwise take the token of
    whatever Ray runtime last wrote ``~/.ray/auth_token`` on this machine.
    """
    marker = uuid.uuid4().hex
    temp = tempfile.mkdtemp(prefix="/tmp/rc")  # short: Ray's socket paths must fit 107 characters
    path = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "CHEXANATOMY_TEST_CLUSTER": marker,
           "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": path}  # fmt: skip
    (gcs,) = free_ports(1)
    try:
        start_node(["--head", f"--port={gcs}", f"--temp-dir={temp}", "--include-dashboard=false"], env)
        start_node([f"--address=127.0.0.1:{gcs}", '--resources={"second_node": 1}'], env)
        yield f"127.0.0.1:{gcs}", env
    finally:
        for _ in range(3):  # raylets may restart a worker while we go
            for pid in marked_pids(marker):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        assert not marked_pids(marker)
        shutil.rmtree(temp, ignore_errors=True)


def announced_load(folder: str, load):
    """Leave ``{subject}.{pid}`` with this worker's node id in ``folder`` (written whole, then renamed, so a kill can
    never leave it empty), then load; the first attempt first pauses (a window in which to be killed).
    """  # noqa: D205
    ct = load()
    first = not list(Path(folder).glob(f"{ct.subject_id}.*"))
    staging = Path(folder, f"writing-{os.getpid()}")  # no dot: the killer's glob never sees a half-written file
    staging.write_text(ray.get_runtime_context().get_node_id())
    staging.replace(Path(folder, f"{ct.subject_id}.{os.getpid()}"))  # atomic: the file appears with its node id
    time.sleep(3.0 if first else 0.0)
    return ct


def drive(output_dir: str, address: str, announce: str) -> None:
    """The build on the cluster with announcing subjects, run in a child process (printed summary as JSON).

    A driver process of its own: Ray settings of the test process (e.g. the token authentication a local runtime
    turned on) must not reach this cluster's driver.
    """
    import dataset_builder.build

    slow = [Subject(s.subject_id, functools.partial(announced_load, announce, s.load)) for s in SUBJECTS]
    dataset_builder.build.list_subjects = lambda config: slow
    summary = build(BuildConfig(output_dir=output_dir, engine="ray", ray_address=address, **CONFIG))
    print("SUMMARY " + json.dumps(summary))


def kill_first_announced(folder: Path, killed: list, stop: threading.Event) -> None:
    """Kill (SIGKILL) the worker process of the first subject that announces itself, once."""
    while not stop.is_set() and not killed:
        for path in folder.glob("*.*"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(path.suffix[1:]), signal.SIGKILL)
                killed.append(path.stem)
            break
        time.sleep(0.05)


CONFIG = dict(source="phantom", **SMALL)
SUBJECTS = pseudo_subjects("phantom", 4, 0, 1.0)


def test_two_node_cluster_builds_the_same_bytes_and_survives_a_killed_worker(cluster, tmp_path, monkeypatch):
    address, env = cluster
    monkeypatch.setattr("dataset_builder.build.list_subjects", lambda config: SUBJECTS)
    build(BuildConfig(output_dir=str(tmp_path / "one"), **CONFIG))
    announce = tmp_path / "announce"
    announce.mkdir()
    killed, stop = [], threading.Event()
    killer = threading.Thread(target=kill_first_announced, args=(announce, killed, stop))
    killer.start()
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_ray_cluster as t; "
            f"t.drive({str(tmp_path / 'cluster')!r}, {address!r}, {str(announce)!r})")  # fmt: skip
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    finally:
        stop.set()
        killer.join()
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.split("SUMMARY ", 1)[1])
    assert killed, "no worker was killed"
    assert summary["built"] == 4 and summary["failed"] == 0, summary["failures"]
    assert digest(tmp_path / "one") == digest(tmp_path / "cluster")
    nodes = {p.read_text() for p in announce.iterdir()}
    assert len(nodes) == 2  # both nodes rendered
    assert len(list(announce.glob(f"{killed[0]}.*"))) == 2  # the killed subject ran again
