"""The local backend honours the manifests with real processes: probes gate
the endpoints, liveness restarts, grace ends in SIGKILL, rollouts respect
maxSurge/maxUnavailable, and nothing outlives the driver."""

import errno
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from support import ROOT, wait_for
from workshop import parallel_runs
from workshop.backends.local import AddressPool, LocalBackend
from workshop.client import echo_once, send_fault
from workshop.manifests import load_stage
from workshop.stages import all_stages


@pytest.fixture
def backend(tmp_path):
    with LocalBackend(workdir=tmp_path, propagation_s=0.1) as local:
        yield local


def events_of(backend, pod):
    return [(t, what) for t, name, what in backend.events() if name == pod]


def test_readiness_probe_keeps_a_slow_starter_out_of_the_endpoints(backend):
    backend.deploy("03", env={"ECHO_STARTUP_DELAY": "1.5"})
    _, endpoints = backend.feed.snapshot()
    assert len(endpoints) == 3
    assert all(echo_once(e.address) for e in endpoints)  # listed means listening
    starts = [t for t, _, what in backend.events() if what == "started"]
    readies = [t for t, _, what in backend.events() if what == "ready"]
    assert min(readies) - max(starts) >= 1.0  # the probe waited for the bind


def test_without_readiness_probe_a_pod_is_ready_before_it_listens(backend):
    backend.deploy("02", env={"ECHO_STARTUP_DELAY": "2"})
    wait_for(lambda: len(backend.feed.snapshot()[1]) == 3, timeout=5, message="endpoints")
    _, endpoints = backend.feed.snapshot()
    assert not any(echo_once(e.address, timeout_ms=100) for e in endpoints)


def test_liveness_failure_restarts_a_hung_replica(backend):
    backend.deploy("04", env={"ECHO_FAULTS": "1"})
    victim = sorted(backend.pods(), key=lambda p: p.name)[0]
    send_fault(victim.address, "hang")
    spec = load_stage("04")
    # two failed checks, then a kill that takes the grace period: the hung loop never exits
    bound = spec.liveness.period_s * (spec.liveness.failure_threshold + 1) + spec.liveness.timeout_s + spec.grace_s + 5
    wait_for(lambda: next(p for p in backend.pods() if p.name == victim.name).restarts == 1,
             timeout=bound, interval=0.1, message="the liveness restart")
    assert "liveness probe failed" in [what for _, what in events_of(backend, victim.name)]
    wait_for(lambda: echo_once(victim.address), timeout=10, message="the restarted replica to answer")


def test_grace_period_ends_in_sigkill_when_sigterm_is_not_enough(backend):
    backend.deploy("04", env={"ECHO_FAULTS": "1"})
    backend.spec.grace_s = 4  # preStop sleeps 3 s; the hung loop never exits on SIGTERM
    victim = sorted(backend.pods(), key=lambda p: p.name)[0]
    send_fault(victim.address, "hang")
    backend.delete_pod(victim.name)
    wait_for(lambda: victim.name not in {p.name for p in backend.pods()}, timeout=15, interval=0.1,
             message="the pod to go")
    timeline = dict((what, t) for t, what in events_of(backend, victim.name))
    assert timeline["sigterm"] - timeline["deleted"] >= 3 - 0.1          # after preStop
    assert 4 - 0.1 <= timeline["sigkill"] - timeline["deleted"] <= 4 + 2  # at the grace period, not later


def test_rolling_update_never_drops_below_replicas_minus_max_unavailable(backend):
    """Replayed from the backend's complete event record, so that a violation
    lasting one control-loop tick is seen too."""
    backend.deploy("03")
    spec = backend.spec
    spec.grace_s = GRACE_S  # as PID 1 the old pods wait for SIGKILL: not what this test is about
    restarted_at = backend.events()[-1][0]
    backend.rollout_restart()
    wait_for(backend.rollout_complete, timeout=60, interval=0.05, message="the rollout")
    wait_for(lambda: not any(p.terminating for p in backend.pods()), timeout=60, message="the old pods to go")
    created, ready, deleted = set(), set(), set()
    for t, pod, what in backend.events():
        created |= {pod} if what.startswith("created") else set()
        ready = ready | {pod} if what == "ready" else ready - {pod} if what == "unready" else ready
        deleted |= {pod} if what == "deleted" else set()
        if t >= restarted_at:
            assert len(ready - deleted) >= spec.replicas - spec.max_unavailable, (t, pod, what)
            assert len(created - deleted) <= spec.replicas + spec.max_surge, (t, pod, what)
    assert all(f"-r{backend.revision}-" in p.name for p in backend.pods())


def test_scale_and_delete(backend):
    backend.deploy("04")
    backend.scale(1)
    wait_for(lambda: len(backend.pods()) == 1, timeout=15, message="scale to 1")
    (only,) = backend.pods()
    backend.delete_pod(only.name)
    wait_for(lambda: [p.name for p in backend.pods() if p.ready] not in ([], [only.name]),
             timeout=15, message="a replacement pod")


GRACE_S = 3  # shortened for the test: the semantics do not depend on its length
SIGKILLED, SIGTERMED = 128 + signal.SIGKILL, 128 + signal.SIGTERM


def delete_one_and_wait_gone(backend):
    victim = sorted(backend.pods(), key=lambda p: p.name)[0].name
    backend.delete_pod(victim)
    wait_for(lambda: victim not in {p.name for p in backend.pods()}, timeout=GRACE_S + 15, interval=0.05,
             message="the deleted pod to go")
    (termination,) = backend.terminations()
    return termination


@pytest.mark.parametrize("stage", all_stages())
def test_replicas_get_pid_1_signal_semantics_as_in_their_containers(backend, stage):
    """As PID 1 (the images' exec-form CMD), a stage without a SIGTERM handler
    ignores SIGTERM and is SIGKILLed when the grace period ends; a stage with
    one drains and exits 0."""
    backend.deploy(stage)
    backend.spec.grace_s = GRACE_S if stage < "04" else backend.spec.grace_s
    termination = delete_one_and_wait_gone(backend)
    took_s = termination.gone_at - termination.deleted_at
    if stage < "04":
        assert termination.exit_code == SIGKILLED and took_s >= GRACE_S
    else:
        assert termination.exit_code == 0 and not termination.sigkilled and took_s < backend.spec.grace_s


@pytest.mark.parametrize("stage", ["01-plain", "03-probes"])
def test_under_an_init_process_sigterm_kills_a_stage_without_handler_at_once(backend, stage):
    backend.deploy(stage, init_process=True)
    backend.spec.grace_s = GRACE_S
    termination = delete_one_and_wait_gone(backend)
    assert termination.exit_code == SIGTERMED and termination.gone_at - termination.deleted_at < GRACE_S


def test_crashed_container_is_restarted_and_its_log_is_the_previous_containers(backend):
    """`kubectl logs --previous`: the crashed container's output; without it,
    the running replacement's only."""
    backend.deploy("02", env={"ECHO_FAULTS": "1"})
    victim = sorted(backend.pods(), key=lambda p: p.name)[0]
    with pytest.raises(LookupError):
        backend.logs(victim.name, previous=True)  # no container ended yet
    send_fault(victim.address, "crash")
    def restarted_and_ready():
        pod = next(p for p in backend.pods() if p.name == victim.name)
        return pod.restarts == 1 and pod.ready
    wait_for(restarted_and_ready, timeout=10, message="the restarted container")
    assert "fault injected: crash" in backend.logs(victim.name, previous=True)
    assert "fault injected: crash" not in backend.logs(victim.name)


def processes_tagged(tag):
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if tag.encode() in environ.read_bytes():
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found


def replicas_tagged(tag):
    """The tagged processes that are a stage's replicas (echo_server.py)."""
    replicas = []
    for pid in processes_tagged(tag):
        try:
            if b"echo_server.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                replicas.append(pid)
        except OSError:
            continue
    return replicas


STOPPED_WITHIN_S = 20  # each child closes its backend: its replicas stopped, its cgroups removed


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads /proc to find processes")
@pytest.mark.parametrize("command", [
    ["run", "--stage", "04", "--scenario", "hang"],
    ["demo", "--stage", "03", "--stage", "04", "--scenario", "hang"],
])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupting_the_driver_leaves_no_process_behind(command, signum, tmp_path):
    tag = f"WORKSHOP_TEST_TAG={uuid.uuid4()}"
    env = {**os.environ, "WORKSHOP_TEST_TAG": tag.split("=", 1)[1]}
    driver = subprocess.Popen([sys.executable, "-m", "workshop", *command, "--out", str(tmp_path)]
                              if command[0] == "demo" else [sys.executable, "-m", "workshop", *command],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # the driver, (its run children,) and their replicas all carry the tag
        wait_for(lambda: len(replicas_tagged(tag)) >= 3, timeout=30, interval=0.1,
                 message="a stage's replicas to start")
        driver.send_signal(signum)
        # stopped, not waited for: a hang run lasts over 40 s
        assert driver.wait(timeout=STOPPED_WITHIN_S) == 130
        wait_for(lambda: not processes_tagged(tag), timeout=10, interval=0.1,
                 message="every process started by the driver to be gone")
    finally:
        for pid in processes_tagged(tag):
            os.kill(pid, signal.SIGKILL)


def test_a_backends_pod_port_is_held_for_it_so_a_concurrent_backend_never_gets_it():
    """make demo runs eight backends at once, each with pods on 127.0.0.2, ...
    at its own port: a port handed to two of them crash-loops both sets of
    pods (address in use). The pool holds its port on 127.0.0.1 while it lives."""
    pool = AddressPool()
    try:
        with socket.socket() as other, pytest.raises(OSError) as taken:
            other.bind(("127.0.0.1", pool.port))
        assert taken.value.errno == errno.EADDRINUSE
    finally:
        pool.close()
    with socket.socket() as other:
        other.bind(("127.0.0.1", pool.port))  # free again once the backend is gone


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads /proc to find processes")
def test_a_run_past_its_time_out_is_told_to_stop_and_closes_its_backend(monkeypatch):
    """A child that takes too long gets SIGTERM first, and closes its backend
    (its replicas here; its namespace on a cluster) before it is gone."""
    tag = str(uuid.uuid4())
    monkeypatch.setenv("WORKSHOP_TEST_TAG", tag)
    monkeypatch.setattr(parallel_runs, "CHILD_TIMEOUT_S", 6)  # hang on 01 runs for 45 s
    with pytest.raises(RuntimeError, match="did not finish within 6 s"):
        parallel_runs.run_one(parallel_runs.Children(), "01-plain", "hang", "local", {})
    assert processes_tagged(tag) == []  # nothing left: the child closed its backend, then exited
