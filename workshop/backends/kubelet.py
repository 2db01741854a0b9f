"""One pod on the local "node": the part of the kubelet the lessons depend on.

A Pod owns one container (a ServerProcess) and advances through its life in
`tick()`, called from the local backend's control thread: start, probes
(startup gates readiness and liveness), restart with back-off, kill on
liveness failure, and termination (preStop, SIGTERM, SIGKILL at the end of
the grace period). Probes run on a thread pool so a slow exec probe never
stalls the control loop.
"""

import os
import signal
import socket
import subprocess
import sys
import time

from ..process import ServerProcess, reserve_port
from ..stages import stage_dir
from .base import ContainerRun, PodHistory, PodTermination
from .cgroups import MemoryCgroup, launcher

BACKOFF_MAX_S = 300       # the kubelet's cap on CrashLoopBackOff
BACKOFF_RESET_S = 600     # running this long forgets earlier crashes
KILL_EXTRA_S = 2          # the kubelet's extra grace when preStop used it all

# The stage images run `python echo_server.py` in exec form: Python is the
# container's PID 1, and the kernel gives PID 1 no default action for a
# signal it has no handler for. So SIGTERM does nothing to stages 01-03 until
# the grace period ends in SIGKILL, while 04-05 install a handler and drain.
# Started with SIGTERM's disposition set to "ignore", a process here behaves
# the same: exec keeps an ignored disposition, a handler the stage installs
# replaces it, SIGKILL still kills, and SIGINT gets Python's own handler
# either way. (A container with an init process, tini say, makes Python an
# ordinary process that SIGTERM kills at once: `init_process=True`.)
AS_PID_1 = launcher(as_pid_1=True)


def local_command(command):
    """The container's `python` is this interpreter (the venv's) here."""
    return [sys.executable if command[0] == "python" else command[0], *command[1:]]


def in_container(command, cgroup):
    """An exec probe's command, run in the container's memory cgroup (a
    `python` one joins it before it starts; others run beside it)."""
    if cgroup is None or command[0] != "python":
        return local_command(command)
    return [sys.executable, *launcher(cgroup), *command[1:]]


class ProbeState:
    def __init__(self, probe, container_started_at):
        self.probe = probe
        self.next_due = container_started_at + probe.initial_delay_s
        self.successes = 0
        self.failures = 0
        self.pending = None  # a Future while a check runs

    def collect(self):
        """The finished check's result (True/False), or None if none finished."""
        if self.pending is None or not self.pending.done():
            return None
        ok = self.pending.result()
        self.pending = None
        self.successes, self.failures = (self.successes + 1, 0) if ok else (0, self.failures + 1)
        return ok


class Termination:
    """preStop, then SIGTERM, then SIGKILL when the grace period is over."""

    def __init__(self, pod, now):
        self.pod = pod
        self.deadline = now + pod.spec.grace_s
        self.pre_stop = None
        self.kill_at = None
        if pod.spec.pre_stop and pod.container.running():
            self.pre_stop = subprocess.Popen(local_command(pod.spec.pre_stop), cwd=stage_dir(pod.spec.stage),
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def tick(self, now):
        """Advance; return True once the container has stopped."""
        container = self.pod.container
        if self.pre_stop is not None:
            if self.pre_stop.poll() is None and now < self.deadline and container.running():
                return False
            if self.pre_stop.poll() is None:
                self.pre_stop.kill()
            self.pre_stop.wait()
            self.pre_stop = None
        if self.kill_at is None:
            container.signal(signal.SIGTERM)
            self.kill_at = max(self.deadline, now + KILL_EXTRA_S) if now >= self.deadline else self.deadline
            self.pod.event("sigterm")
        if not container.running():
            return True
        if now >= self.kill_at:
            container.kill()
            self.pod.event("sigkill")
            return True
        return False

    def abort(self):
        if self.pre_stop is not None and self.pre_stop.poll() is None:
            self.pre_stop.kill()
            self.pre_stop.wait()


class Pod:
    def __init__(self, name, spec, revision, env, host, port, log_dir, probe_pool, record, backoff_initial_s,
                 init_process=False):
        self.name = name
        self.spec = spec
        self.revision = revision
        self.host, self.port = host, port
        self.address = f"tcp://{host}:{port}"
        self.env = {**spec.env, **env, "ECHO_BIND": self.address}
        self.log_dir = log_dir
        self.container_logs = []  # one file per container run: restarts keep theirs
        self.probe_pool = probe_pool
        self.record = record
        self.backoff_initial_s = backoff_initial_s
        self.init_process = init_process
        self.termination = None  # a PodTermination once deleted
        self.history = PodHistory(name, self.address, created_at=time.monotonic())
        self.cgroup = None  # the running container's memory cgroup, if limits are held here
        self.spent_cgroups = []  # ended containers' cgroups not removed yet (a probe was still in one)
        self.container = None
        self.container_started_at = None
        self.restarts = 0
        self.crashes_in_a_row = 0
        self.restart_at = time.monotonic()
        self.started = self.ready = False
        self.probes = {}
        self.killing = None     # a Termination of the container (liveness) or of the pod
        self.deleted = False
        self.gone = False
        self.metrics_port = None
        self._metrics_reservation = None  # holds metrics_port for the pod's life

    # -- what the endpoints controller and the deployment controller read --

    @property
    def serving(self):
        return self.ready and not self.deleted

    def metrics_address(self):
        return f"http://{self.host}:{self.metrics_port}/metrics" if self.metrics_port else None

    def event(self, what):
        self.record(self.name, what)

    def log_path(self, previous=False):
        """The file of `kubectl logs` (or `--previous`): the running
        container's, else the last one's; previous: the last container that
        ended before the current one (None if there is none)."""
        runs = self.container_logs
        if previous and self.container is not None:
            runs = runs[:-1]  # the running container is the current one
        return runs[-1] if runs else None

    # -- the kubelet's loop for this pod --

    def tick(self, now):
        if self.spent_cgroups:
            self.remove_spent_cgroups()
        if self.gone:
            return
        if self.killing is not None:
            if self.killing.tick(now):
                self._container_stopped(now, killed=True)
            elif not self.deleted:
                # A container killed after a liveness failure still runs until
                # it stops, and the kubelet still probes its readiness: a hung
                # loop whose TCP port still accepts stays in the endpoints.
                self._run_probes(now, only="readiness")
            return
        if self.container is None:
            if self.deleted:
                self._finish()
            elif now >= self.restart_at:
                self._start_container(now)
            return
        if not self.container.running():
            self.event(f"exited {self.container.exit_code()}")
            self._container_stopped(now, killed=False)
            return
        self._run_probes(now)

    def delete(self, now):
        """Pod deletion: out of the endpoints at once, then terminate."""
        if self.deleted:
            return
        self.deleted = True
        self.termination = PodTermination(self.name, deleted_at=now)
        self.history.deleted_at = now
        self.event("deleted")
        self._set_ready(False)
        if self.container is not None and self.killing is None:
            self.killing = Termination(self, now)

    def force_stop(self):
        """Driver shutdown: kill everything now, no grace."""
        if self.killing is not None:
            self.killing.abort()
        if self.container is not None:
            self.container.kill()
        self._release_cgroup()
        self._release_ports()
        self.gone = True

    def _start_container(self, now):
        env = dict(self.env)
        if "METRICS_PORT" in env:
            # /metrics binds every interface: one port per pod here, the same for each of its containers.
            if self._metrics_reservation is None:
                self._metrics_reservation = reserve_port()
            env["METRICS_PORT"] = str(self._metrics_reservation.getsockname()[1])
        self.metrics_port = env.get("METRICS_PORT")
        self.container_logs.append(self.log_dir / f"{self.name}.{len(self.container_logs)}.log")
        if self.spec.memory_limit and MemoryCgroup.why_not() is None:
            self.cgroup = MemoryCgroup(self.spec.memory_limit)  # a container's own, as the runtime makes one
        self.container = ServerProcess.of_stage(
            self.spec.stage, env, self.container_logs[-1],
            launcher=launcher(self.cgroup, as_pid_1=not self.init_process)).start()
        self.container_started_at = now
        self.history.runs.append(ContainerRun(started_at=now))
        self.started = self.spec.startup is None
        self.probes = {kind: ProbeState(probe, now) for kind, probe in (
            ("startup", self.spec.startup), ("readiness", self.spec.readiness),
            ("liveness", self.spec.liveness)) if probe}
        self.event("started")
        if self.started and self.spec.readiness is None:
            self._set_ready(True)  # no readiness probe: ready as soon as it runs

    def _container_stopped(self, now, killed):
        ran_for = now - self.container_started_at
        self.killing = None
        self._set_ready(False)
        self.container.kill()  # reap
        code = self.container.exit_code()
        self.container = None
        self.history.runs[-1].ended_at, self.history.runs[-1].reason = now, self._end_reason(code)
        self._release_cgroup()
        if self.deleted:
            self.termination.exit_code = 128 - code if code < 0 else code  # -9: killed by SIGKILL -> 137
            self._finish()
            return
        if ran_for >= BACKOFF_RESET_S:
            self.crashes_in_a_row = 0
        # CrashLoopBackOff: restart at once the first time, then 10 s, 20 s, ...
        delay = 0 if self.crashes_in_a_row == 0 else min(
            self.backoff_initial_s * 2 ** (self.crashes_in_a_row - 1), BACKOFF_MAX_S)
        self.crashes_in_a_row += 1
        self.restarts += 1
        self.restart_at = now + delay
        self.event(f"restart in {delay:g} s" + (" (killed)" if killed else ""))

    def _end_reason(self, code):
        """What the runtime reports as the container's end: Completed (exit
        0), OOMKilled (the kernel killed it for its memory limit), or Error."""
        if code == -signal.SIGKILL and self.cgroup is not None and self.cgroup.oom_kills():
            return "OOMKilled"
        return "Completed" if code == 0 else "Error"

    def _release_ports(self):
        if self._metrics_reservation is not None:
            self._metrics_reservation.close()
            self._metrics_reservation = None

    def _release_cgroup(self):
        if self.cgroup is not None:
            self.spent_cgroups.append(self.cgroup)
            self.cgroup = None
        self.remove_spent_cgroups()

    def remove_spent_cgroups(self):
        self.spent_cgroups = [cgroup for cgroup in self.spent_cgroups if not cgroup.remove()]

    def _finish(self):
        self._release_ports()
        self.gone = True
        if self.termination is not None:
            self.termination.gone_at = time.monotonic()
        self.event("gone")

    def _set_ready(self, ready):
        if ready != self.ready:
            self.ready = ready
            self.event("ready" if ready else "unready")

    def _run_probes(self, now, only=None):
        for kind, state in self.probes.items():
            if only is not None and kind != only:
                continue
            if kind != "startup" and not self.started:
                continue
            if kind == "startup" and self.started:
                continue
            ok = state.collect()
            if ok is not None:
                self._apply(kind, state, ok, now)
                if self.killing is not None and only is None:
                    return
            if state.pending is None and now >= state.next_due:
                state.next_due = now + state.probe.period_s
                state.pending = self.probe_pool.submit(run_probe, state.probe, self.host, self.port,
                                                       self.env, self.spec, self.cgroup)

    def _apply(self, kind, state, ok, now):
        probe = state.probe
        if kind == "startup":
            if ok:
                self.started = True
                self.event("startup probe passed")
                if self.spec.readiness is None:
                    self._set_ready(True)
            elif state.failures >= probe.failure_threshold:
                self._kill_container(now, "startup probe failed")
        elif kind == "readiness":
            if ok and state.successes >= probe.success_threshold:
                self._set_ready(True)
            elif not ok and state.failures >= probe.failure_threshold:
                self._set_ready(False)
        elif kind == "liveness" and not ok and state.failures >= probe.failure_threshold:
            self._kill_container(now, "liveness probe failed")

    def _kill_container(self, now, reason):
        """Kill the container (preStop, SIGTERM, SIGKILL at the grace period),
        then restart it. It stays ready for as long as its readiness probe says."""
        self.event(reason)
        self.killing = Termination(self, now)


def run_probe(probe, host, port, env, spec, cgroup=None):
    """One check, as the kubelet does it: a TCP connect, or a command in the
    container — its environment, and its memory cgroup where it has one —
    that must exit 0 within the timeout."""
    if probe.tcp_port is not None:
        target = port if probe.tcp_port == spec.echo_port else probe.tcp_port
        try:
            with socket.create_connection((host, target), timeout=probe.timeout_s):
                return True
        except OSError:
            return False
    try:
        # A session of its own, as each container has: with the kernel's autogroup scheduling a
        # session shares the CPU as one, and in the driver's it would queue behind the load.
        result = subprocess.run(in_container(probe.command, cgroup), cwd=stage_dir(spec.stage),
                                env={**os.environ, **env}, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=probe.timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0
