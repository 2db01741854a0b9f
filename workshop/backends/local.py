"""The local backend: a stage's Deployment as real processes on this machine.

It reads the stage's rendered manifests and approximates, for one machine,
what the kubelet, the Deployment controller and the EndpointSlice controller
do with them:

- `replicas` pods, each a real `python echo_server.py` on its own loopback
  address (127.0.0.2, 127.0.0.3, ... on one port, like pod IPs), or, where
  only 127.0.0.1 exists (macOS by default), on distinct ports;
- PID 1's signal semantics, as the stage images run Python: SIGTERM does
  nothing to a process without a handler (see `AS_PID_1` in kubelet.py for
  how, and why it is faithful); `deploy(init_process=True)` runs Python as an
  ordinary process instead, as under tini or dumb-init;
- the container's env; startup, readiness and liveness probes (tcpSocket and
  exec) with their period, timeout and thresholds; restart policy Always with
  CrashLoopBackOff (at once, then 10 s, 20 s, ... up to 300 s);
- termination: out of the endpoints at once, preStop, SIGTERM, SIGKILL when
  terminationGracePeriodSeconds runs out; liveness failures kill the same way,
  but the pod stays in the endpoints while its readiness probe passes (a hung
  loop's TCP port still accepts: libzmq's I/O thread answers it);
- rolling updates honouring maxSurge and maxUnavailable; scale; delete a pod;
- the endpoint feed: ready, non-terminating pods, published after a
  propagation delay (default 0.5 s) that stands for the time the endpoints
  controller and a watcher take to learn of a change — the race that stage
  04's preStop sleep exists for.

- a Service as kube-proxy makes one (`local_service.py`): a random ready
  endpoint per new connection, kept until that pod's process is gone.

- resources.limits.memory: each container runs in a memory cgroup of that
  limit where this machine allows one (root, cgroup v1 or v2: cgroups.py),
  so the kernel OOM-kills it as on a node, and its end reads OOMKilled.

What it does not do: no PID namespace (the process only behaves as PID 1
towards SIGTERM); no CPU limits, images, volumes, security contexts, nodes
or scheduling; the Service is a relay on 127.0.0.1, not a virtual IP;
probe timing is as precise as a 20 ms control loop.

Every process it starts is killed by `close()`, which the CLI also runs on
Ctrl-C and SIGTERM.
"""

import itertools
import secrets
import socket
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..feed import Endpoint, EndpointFeed
from ..load_generator import BackgroundLoad
from ..manifests import load_stage
from ..process import free_port
from .base import Backend, PodStatus
from .cgroups import MemoryCgroup
from .kubelet import Pod
from .local_service import LocalService

TICK_S = 0.02


def loopback_aliases_work():
    """Linux routes all of 127.0.0.0/8 to loopback; macOS only 127.0.0.1."""
    try:
        with socket.socket() as probe:
            probe.bind(("127.0.0.2", 0))
        return True
    except OSError:
        return False


class AddressPool:
    """Pod addresses: a fresh loopback IP per pod on one port, or, without
    aliases, 127.0.0.1 with a fresh port per pod."""

    def __init__(self, port=None):
        self.aliases = loopback_aliases_work()
        # Several backends run at once (make demo runs eight): each keeps its
        # port bound on 127.0.0.1 while it lives, so no other one is handed
        # the same port and its pods (127.0.0.2, ... on that port) never
        # collide with ours. The pods bind other addresses: no conflict.
        self._reservation = socket.socket()
        self._reservation.bind(("127.0.0.1", port or 0))
        self.port = self._reservation.getsockname()[1]
        self._hosts = itertools.cycle(f"127.0.0.{n}" for n in range(2, 255))

    def close(self):
        self._reservation.close()

    def take(self, in_use):
        if not self.aliases:
            return "127.0.0.1", free_port()
        for host in self._hosts:
            if host not in in_use:
                return host, self.port


class LocalBackend(Backend):
    name = "local"

    def __init__(self, workdir=None, port=None, propagation_s=0.5, backoff_initial_s=10):
        self.feed = EndpointFeed()
        self.propagation_s = propagation_s
        self.backoff_initial_s = backoff_initial_s
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="echo-local-")
        self.workdir = Path(workdir or self._tmp.name)
        self._addresses = AddressPool(port)
        self._probe_pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="probe")
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = None
        self._failure = None  # what ended the control loop, if something did
        self._pods = {}
        self._every_pod = {}  # gone ones too, for their logs
        self._events = []
        self._publications = deque()
        self._last_truth = frozenset()
        self.spec = None
        self.service = None
        self.replicas = 0
        self.revision = 0
        self.template_env = {}
        self.init_process = False
        self._deployed_at = 0.0
        self.started_at = time.monotonic()

    # -- the Backend interface --

    def deploy(self, stage, env=None, init_process=False, timeout=60):
        """A fresh Deployment, as the kube backend makes one: whatever ran before is gone."""
        with self._lock:
            for pod in self._pods.values():
                pod.force_stop()
            self._pods.clear()
            self.spec = load_stage(stage)
            self.replicas = self.spec.replicas
            self.template_env = dict(env or {})
            self.init_process = init_process
            self.revision += 1
            self._deployed_at = time.monotonic()
        if self._thread is None:
            self._thread = threading.Thread(target=self._control_loop, name="local-control", daemon=True)
            self._thread.start()
            self.service = LocalService(self.feed).start()
        started = time.monotonic()
        self.wait_rollout(timeout)
        self.wait_endpoints(self.replicas, timeout)
        return time.monotonic() - started

    def rollout_restart(self, env=None):
        with self._lock:
            self.template_env.update(env or {})
            self.revision += 1

    def scale(self, replicas):
        with self._lock:
            self.replicas = replicas

    def delete_pod(self, name):
        with self._lock:
            self._pods[name].delete(time.monotonic())

    def _check_control_loop(self):
        if self._failure is not None:
            raise RuntimeError(f"the local backend's control loop failed: {self._failure!r}") from self._failure

    def rollout_complete(self):
        self._check_control_loop()
        with self._lock:
            live = [p for p in self._pods.values() if not p.deleted]
            return (len(live) == self.replicas and all(p.revision == self.revision and p.ready for p in live))

    def pods(self):
        self._check_control_loop()
        with self._lock:
            return [PodStatus(p.name, p.address, p.ready, p.deleted, p.restarts, p.metrics_address())
                    for p in self._pods.values()]

    def pod_history(self):
        with self._lock:
            return [p.history for p in self._every_pod.values() if p.history.created_at >= self._deployed_at]

    def memory_limits_held(self):
        return MemoryCgroup.why_not()

    def terminations(self):
        with self._lock:
            return [p.termination for p in self._every_pod.values()
                    if p.termination is not None and p.termination.deleted_at >= self._deployed_at]

    def start_load(self, spec):
        return BackgroundLoad(self.feed, spec, service_address=self.service.address)

    def logs(self, pod_name, previous=False):
        with self._lock:
            pod = self._every_pod.get(pod_name)
            path = pod and pod.log_path(previous)
        if path is None:
            which = "previous terminated container" if previous else "container"
            raise LookupError(f"{which} of pod {pod_name} not found")
        return path.read_text(errors="replace") if path.exists() else ""

    def events(self):
        with self._lock:
            return list(self._events)

    def close(self):
        if self.service is not None:
            self.service.close()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            for pod in self._every_pod.values():
                pod.force_stop()
            self._pods.clear()
        self._probe_pool.shutdown(wait=True, cancel_futures=True)
        for pod in self._every_pod.values():  # the probes are over: nothing keeps a cgroup busy now
            pod.remove_spent_cgroups()
        self._addresses.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    # -- the control loop: kubelet, Deployment controller, endpoints --

    def _control_loop(self):
        try:
            while not self._stop.is_set():
                with self._lock:
                    now = time.monotonic()
                    for pod in list(self._pods.values()):
                        pod.tick(now)
                        if pod.gone:
                            del self._pods[pod.name]
                    self._reconcile(now)
                    self._publish_endpoints(now)
                self._stop.wait(TICK_S)  # the loop's pace
        except BaseException as error:  # the scenario's thread raises it, at its next look
            self._failure = error
            raise

    def _record(self, pod_name, what):
        self._events.append((time.monotonic() - self.started_at, pod_name, what))

    def _create_pod(self):
        in_use = {p.host for p in self._pods.values()}
        host, port = self._addresses.take(in_use)
        name = f"{self.spec.name}-r{self.revision}-{secrets.token_hex(3)}"
        pod = Pod(name, self.spec, self.revision, self.template_env, host, port,
                  self.workdir, self._probe_pool, self._record, self.backoff_initial_s, self.init_process)
        self._pods[name] = self._every_pod[name] = pod
        self._record(name, f"created at {pod.address}")

    def _reconcile(self, now):
        """The Deployment controller: scale, and roll pods of an older revision
        over to the current one within maxSurge and maxUnavailable."""
        if self.spec is None:
            return
        live = [p for p in self._pods.values() if not p.deleted]
        new = [p for p in live if p.revision == self.revision]
        old = [p for p in live if p.revision != self.revision]
        if not old:
            for _ in range(self.replicas - len(new)):
                self._create_pod()
            surplus = sorted(new, key=lambda p: (p.ready, -p.restarts))[:max(0, len(new) - self.replicas)]
            for pod in surplus:
                pod.delete(now)
            return
        room = self.replicas + self.spec.max_surge - len(live)
        for _ in range(max(0, min(room, self.replicas - len(new)))):
            self._create_pod()
        available = sum(p.ready for p in live)
        min_available = self.replicas - self.spec.max_unavailable
        for pod in sorted(old, key=lambda p: p.ready):  # unready ones go first, at no cost
            if not pod.ready:
                pod.delete(now)
            elif available - 1 >= min_available:
                pod.delete(now)
                available -= 1

    def _publish_endpoints(self, now):
        truth = frozenset(Endpoint(p.name, p.address) for p in self._pods.values() if p.serving)
        if truth != self._last_truth:
            self._last_truth = truth
            self._publications.append((now + self.propagation_s, truth))
        while self._publications and self._publications[0][0] <= now:
            self.feed.publish(self._publications.popleft()[1])
