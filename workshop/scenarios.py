"""Failure scenarios: each deploys a stage, puts load on it with the
endpoint-aware client, does one thing to the Deployment, and returns a
ScenarioResult. Data flows one way: scenario -> backend + load -> result.

Every stage is deployed with ECHO_FAULTS=1, so crash and hang can be sent to
one replica the same way on a real cluster: by the load generator, which runs
where the pods can be reached (in the cluster, on the kube backend).
"""

import statistics
import time
from dataclasses import asdict, dataclass, field

from .load_generator import LoadSpec
from .losses import lost_by_cause
from .manifests import load_stage
from .stages import resolve

RATE = 150             # requests per second: eight runs share two cores, and none may starve another
                       # (at 500 and at 250, exec liveness probes timed out for want of CPU)
NAIVE_RATE = 60        # the naive client's, through the Service, where a scenario has one
TIMEOUT_S = 1.0        # a request unanswered for this long is lost
SLOW_MS = 100          # an echo slower than this waited for something
SETTLE_S = 0.5         # load keeps running this long after the event is over
TICK_S = 0.05          # how often a scenario looks at the Deployment
LOAD_START_BOUND_S = 180  # before the load's clock starts: a Job scheduled, every endpoint answering


@dataclass
class ScenarioResult:
    stage: str
    scenario: str
    backend: str
    sent: int = 0
    answered: int = 0
    lost: int = 0
    lost_by_cause: dict = field(default_factory=dict)  # losses.CAUSES -> how many
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    slow: int = 0                    # answered, but slower than SLOW_MS
    recover_s: float | None = None   # event -> back to normal (see each scenario)
    rollout_ready_s: float | None = None  # event -> the Deployment reports every new pod ready
    rollout_s: float | None = None   # event -> the last old pod is gone
    sigkills: int = 0                # deleted pods whose container ended in SIGKILL
    pod_exit_s: list = field(default_factory=list)  # each deleted pod: deletion -> gone, s
    via_service_sent: int | None = None  # the naive client through the Service
    via_service_lost: int | None = None
    restarts: int = 0
    crash_log_records: int | None = None
    early: int | None = None         # sent to a replica before it could answer
    lost_to_hung: int | None = None
    sent_to_hung: int | None = None
    oom_kills: int | None = None     # containers the kernel killed at their memory limit
    resilient_sent: int | None = None  # the resilient client beside the endpoint-aware one
    resilient_lost: int | None = None
    resilient_lost_by_cause: dict | None = None
    retries: int | None = None       # its attempts beyond each request's first
    ejections: int | None = None     # ...and the endpoints it took out after time-outs in a row
    no_figure: str | None = None     # why this run could not measure what it is for
    duration_s: float = 0            # of the load
    wall_s: float = 0                # of the whole run, deployment included
    timeline: list = field(default_factory=list)  # (t s, latency ms or None if lost)

    def to_dict(self):
        return asdict(self)


class Scenario:
    """A run of one scenario: load for at most `max_s`; the scenario's one
    event at `event_at_s` (an action on the Deployment, or a fault or a
    hostile client the load sends to one replica), then a watch for recovery.

    A scenario says what it does in `act()` (or `fault` / `attack`), notes
    what it sees after the event in `watch(t)` (the result's milestones), says
    when things are back to normal in `recovered(t)` (a question only), and
    fills in its own figures in `finish()` once the load is over."""

    name = "scenario"
    max_s = 20
    timeout_s = TIMEOUT_S
    event_at_s = 1.0
    fault = None       # crash, hang, ...: sent by the load generator at event_at_s
    attack = None      # a hostile client the load generator turns on one replica (hostile.ATTACKS)
    naive_rate = 0     # a naive client through the Service beside the endpoint-aware one
    init_process = False
    deletes_pods = False  # waits for deleted pods to be gone: a grace period, if they ignore SIGTERM
    measures_latency = False  # its numbers are latencies: run it when nothing else competes
    resilient_rate = 0  # a resilient client beside the endpoint-aware one (workshop/resilience.py)

    def __init__(self, backend, stage):
        self.backend = backend
        self.stage = resolve(stage)
        self.result = ScenarioResult(stage=self.stage, scenario=self.name, backend=backend.name)
        self.event_t = None      # when the event happened, in load-time seconds
        self.event_clock = None  # ... and on this process's monotonic clock
        self.done_t = None       # when the scenario saw things back to normal
        self.load = None         # the running load's handle (Backend.start_load)
        self.victim = None       # the pod the event struck, where it strikes one
        self.restarts_before = 0
        self.samples = []        # the endpoint-aware client's (sent at, latency or None, endpoint)

    def run(self):
        self.backend.deploy(self.stage, env={"ECHO_FAULTS": "1"}, init_process=self.init_process)
        self.restarts_before = sum(p.restarts for p in self.backend.pods())
        self.load = self.backend.start_load(LoadSpec(
            rate=RATE, timeout_s=self.timeout_s, max_s=self.max_s, fault=self.fault, attack=self.attack,
            fault_at_s=self.event_at_s, naive_rate=self.naive_rate,
            resilient_rate=self.resilient_rate))
        deadline = time.monotonic() + self.max_s + LOAD_START_BOUND_S
        while not self.load.finished():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} on {self.stage}: the load did not finish in time")
            if self._tick(self.load.elapsed()):
                self.load.stop()
            time.sleep(TICK_S)  # the scenario's pace: it acts between looks at the Deployment
        self._summarise(self.load.result())
        self.finish()
        return self.result

    def _tick(self, t):
        """Act once, then watch for recovery; True once it is time to stop."""
        if self.done_t is not None:
            return t >= self.done_t + SETTLE_S
        if self.event_t is None:
            if self.strikes_from_the_load and self.load.fault is not None:
                # sent at fault.t on the load's clock: seen here a moment later
                self.event_t = self.load.fault.t
                self.event_clock = time.monotonic() - (t - self.event_t)
                self.victim = self.load.fault.pod
            elif not self.strikes_from_the_load and t >= self.event_at_s:
                self.event_t, self.event_clock = t, time.monotonic()
                self.act()
            return False
        self.watch(t)
        if self.recovered(t):
            self.done_t = t
        return False

    @property
    def strikes_from_the_load(self):
        return bool(self.fault or self.attack)

    @classmethod
    def expected_s(cls, spec):
        """A guess of how long a run on a stage (its StageSpec) takes: enough
        to start the longest runs first. A run that deletes pods may wait a
        grace period for them."""
        return min(cls.max_s, 8 + spec.grace_s) if cls.deletes_pods else cls.max_s / 2

    def act(self):
        """Do the scenario's one thing to the Deployment."""

    def watch(self, t):
        """Note what has happened by load time `t`, after the event."""

    def recovered(self, t):
        """True once the Deployment is back to normal after the event; by
        default two seconds after it (Steady's event does nothing)."""
        return t >= self.event_t + 2

    def note_recovery(self, t):
        if self.result.recover_s is None:
            self.result.recover_s = round(t - self.event_t, 2)

    def note_rollout_ready(self, t):
        if self.result.rollout_ready_s is None and self.backend.rollout_complete():
            self.result.rollout_ready_s = round(t - self.event_t, 2)

    def finish(self):
        """Fill in scenario-specific fields once the load has stopped."""

    def _summarise(self, outcome):
        r = self.result
        load = outcome.aware
        r.sent, r.answered, r.lost = load.sent, load.answered, load.lost
        latencies_ms = sorted(s[1] * 1000 for s in load.samples if s[1] is not None)
        if latencies_ms:
            r.p50_ms = round(statistics.median(latencies_ms), 3)
            r.p99_ms = round(latencies_ms[min(len(latencies_ms) - 1, int(len(latencies_ms) * 0.99))], 3)
            r.max_ms = round(latencies_ms[-1], 3)
        r.slow = sum(ms > SLOW_MS for ms in latencies_ms)
        r.restarts = sum(p.restarts for p in self.backend.pods()) - self.restarts_before
        r.duration_s = round(max((s[0] for s in load.samples), default=0), 2)
        r.timeline = thin([(round(t, 3), None if lat is None else round(lat * 1000, 3))
                           for t, lat, _ in load.samples])
        self.samples = load.samples
        pods = self.backend.pod_history()
        struck = None
        if (self.fault == "hang" or self.attack) and outcome.fault is not None:
            struck = (outcome.fault.pod, self.load.started_at + outcome.fault.t, "attacked" if self.attack else "hung")
        r.lost_by_cause = lost_by_cause(load.samples, pods, self.load.started_at, self.timeout_s, struck)
        r.oom_kills = sum(p.oom_kills for p in pods)
        if outcome.naive is not None:
            r.via_service_sent, r.via_service_lost = outcome.naive.sent, outcome.naive.lost
        if outcome.resilient is not None:
            resilient = outcome.resilient
            r.resilient_sent, r.resilient_lost = resilient.sent, resilient.lost
            r.resilient_lost_by_cause = lost_by_cause(resilient.samples, pods, self.load.started_at, self.timeout_s,
                                                      struck)
            r.retries, r.ejections = resilient.retries, resilient.ejections
        terminations = self.backend.terminations()
        r.sigkills = sum(t.sigkilled for t in terminations)
        r.pod_exit_s = [round(t.gone_at - t.deleted_at, 2) for t in terminations
                        if t.gone_at is not None and t.deleted_at is not None]
        gone = [t.gone_at for t in terminations if t.gone_at is not None]
        if gone and self.event_clock is not None:
            r.rollout_s = round(max(gone) - self.event_clock, 2)

    def victim_status(self):
        return next((p for p in self.backend.pods() if p.name == self.victim), None)


def thin(samples, keep=4000):
    """Every lost request, and answered ones evenly thinned, for plotting."""
    answered = [s for s in samples if s[1] is not None]
    step = max(1, len(answered) // keep)
    kept = answered[::step] + [s for s in samples if s[1] is None]
    return sorted(kept, key=lambda s: s[0])


class Steady(Scenario):
    """Nothing happens: the baseline latency of the stage."""

    name = "steady"
    max_s = 4
    measures_latency = True


class RollingRestart(Scenario):
    """`kubectl rollout restart`: every replica replaced under load, for at
    least `min_s` so a zero-loss claim stands on thousands of requests, and
    until the last old pod is gone (a grace period, for a pod that ignores
    SIGTERM). A naive client through the Service runs beside the
    endpoint-aware one."""

    name = "rolling-restart"
    deletes_pods = True
    max_s = 50
    min_s = 11
    naive_rate = NAIVE_RATE

    def act(self):
        self.backend.rollout_restart()

    def watch(self, t):
        self.note_rollout_ready(t)

    def recovered(self, t):
        return (self.result.rollout_ready_s is not None and t >= self.min_s
                and not any(p.terminating for p in self.backend.pods()))


class RollingRestartInit(RollingRestart):
    """The same rollout, with Python not PID 1: an init process (tini,
    dumb-init) forwards SIGTERM, and SIGTERM's default action kills at once."""

    name = "rolling-restart-init"
    naive_rate = 0
    init_process = True

    @classmethod
    def expected_s(cls, spec):
        """SIGTERM kills an old pod at once here, or it drains: no grace period waited out."""
        return min(cls.max_s, cls.min_s + 4)


class PodKill(Scenario):
    """`kubectl delete pod`: one replica terminated the polite way."""

    name = "pod-kill"
    deletes_pods = True
    max_s = 45
    resilient_rate = RATE  # the client's half: the same fault, met by a client that keeps deadlines

    def act(self):
        ready = sorted(p.name for p in self.backend.pods() if p.ready and not p.terminating)
        self.victim = ready[0]
        self.backend.delete_pod(self.victim)

    def watch(self, t):
        if self.victim not in {p.name for p in self.backend.pods()} and self.backend.rollout_complete():
            self.note_recovery(t)

    def recovered(self, t):
        return self.result.recover_s is not None


class Crash(Scenario):
    """A crash fault: the replica dies; the kubelet restarts it."""

    name = "crash"
    max_s = 30
    fault = "crash"
    resilient_rate = RATE  # the client's half: the same fault, met by a client that keeps deadlines

    def watch(self, t):
        pod = self.victim_status()
        if pod is not None and pod.restarts > 0 and pod.ready:
            self.note_recovery(t)

    def recovered(self, t):
        return self.result.recover_s is not None

    def finish(self):
        """How many log records the crash left: what `kubectl logs --previous`
        shows after the crashed container's first line (the one saying it
        listens), one line one record."""
        lines = self.backend.logs(self.victim, previous=True).splitlines()
        first = next((i for i, line in enumerate(lines) if "listening on" in line), -1)
        self.result.crash_log_records = len(lines) - first - 1


class Hang(Scenario):
    """A hang fault: the replica's loop freezes, its process lives on. How long
    until it is out of rotation, and what is lost until then? With a liveness
    probe the container is killed, but its TCP readiness still passes (the
    libzmq I/O thread accepts), so it stays in the endpoints until the kill is
    done: a grace period later. 01-02 never leave: they run the full time."""

    name = "hang"
    fault = "hang"
    resilient_rate = RATE  # the client's half: the same fault, met by a client that keeps deadlines
    max_s = 45  # past when a liveness kill takes it out: 2 x 5 s + the 30 s grace
    never_out_s = 25  # without a liveness probe it never leaves: this long shows it

    def __init__(self, backend, stage):
        super().__init__(backend, stage)
        if load_stage(self.stage).liveness is None:
            self.max_s = self.never_out_s

    @classmethod
    def expected_s(cls, spec):
        """Without liveness, the time that shows it never leaves; with it, the
        probe's failures and a grace period."""
        probe = spec.liveness
        return cls.never_out_s if probe is None else probe.period_s * probe.failure_threshold + spec.grace_s + 3

    def watch(self, t):
        _, endpoints = self.backend.feed.snapshot()
        if self.victim not in {e.pod for e in endpoints}:
            self.note_recovery(t)

    def recovered(self, t):
        return self.result.recover_s is not None

    def finish(self):
        """Requests sent to the victim from its first loss on: the loop froze
        a moment after the fault was sent, not at the moment itself."""
        to_victim = [s for s in self.samples if s[2] == self.load.fault.address and s[0] >= self.event_t]
        first_lost = next((i for i, s in enumerate(to_victim) if s[1] is None), len(to_victim))
        to_hung = to_victim[first_lost:]
        self.result.sent_to_hung = len(to_hung)
        self.result.lost_to_hung = sum(s[1] is None for s in to_hung)


class SlowStart(Scenario):
    """A rollout to replicas that take 2 s to initialise (ECHO_STARTUP_DELAY).
    Requests sent to a replica before it listens wait for it — or are lost."""

    name = "slow-start"
    max_s = 30
    timeout_s = 5.0  # long enough that early requests show up as latency
    startup_delay_s = 2

    early_s = 0.25  # sent this long before the replica's first reply: it was not listening

    def act(self):
        self.backend.rollout_restart(env={"ECHO_STARTUP_DELAY": str(self.startup_delay_s)})

    def finish(self):
        """Count requests sent to a replica well before it first answered
        anyone: they went to a replica that was not listening yet."""
        first_reply = {}
        for sent, latency, endpoint in self.samples:
            if latency is not None:
                first_reply[endpoint] = min(first_reply.get(endpoint, sent + latency), sent + latency)
        self.result.early = sum(1 for sent, _, endpoint in self.samples
                                if sent < first_reply.get(endpoint, float("inf")) - self.early_s)

    def watch(self, t):
        self.note_rollout_ready(t)

    def recovered(self, t):
        """Its figures are in once the new pods are ready: no need to wait for
        old ones that ignore SIGTERM to be killed."""
        return self.result.rollout_ready_s is not None and t >= self.event_t + self.startup_delay_s + 1


class ScaleDown(Scenario):
    """`kubectl scale --replicas=1`: two replicas terminated under load."""

    name = "scale-down"
    deletes_pods = True
    max_s = 45

    def act(self):
        self.backend.scale(1)

    def watch(self, t):
        pods = self.backend.pods()
        if len(pods) == 1 and pods[0].ready:
            self.note_recovery(t)

    def recovered(self, t):
        return self.result.recover_s is not None


class HostileClient(Scenario):
    """From 1 s on, one client sends megabyte frames to one replica and never
    reads. A stage without limits echoes them and queues the echoes it cannot
    send until the kernel OOM-kills it at its Deployment's memory limit (and
    again when it is back); one with limits drops the peer at its first frame.
    Where containers are not held to their memory limit here, the attack is
    not run (it would take this machine's memory instead): the result says why."""

    name = "hostile-client"
    attack = "megabyte-frames"
    max_s = 16
    watch_s = 6  # after the attack started: an OOM kill, the restart, and often a second kill...
    kill_bound_s = 12  # ...but a loaded machine reads slower and fills the limit later: until then,
                       # a replica not yet restarted is watched on (one that holds is, to the end)

    @classmethod
    def expected_s(cls, spec):
        """At most: a replica that holds is watched to the kill bound."""
        return cls.event_at_s + cls.kill_bound_s

    def run(self):
        why_not = self._why_no_figure()
        if why_not is None:
            return super().run()
        self.result.no_figure = why_not
        return self.result

    def _why_no_figure(self):
        if load_stage(self.stage).memory_limit is None:
            return "the Deployment sets no memory limit"
        return self.backend.memory_limits_held()

    def recovered(self, t):
        if t < self.event_t + self.watch_s:
            return False
        victim = self.victim_status()
        return (victim is not None and victim.restarts > 0) or t >= self.event_t + self.kill_bound_s


SCENARIOS = {cls.name: cls for cls in (Steady, RollingRestart, RollingRestartInit, PodKill, Crash, Hang, SlowStart,
                                        ScaleDown, HostileClient)}


def run_scenario(backend, stage, name):
    """Run one scenario on a fresh deployment of `stage`; the caller owns the backend."""
    started = time.monotonic()
    result = SCENARIOS[name](backend, stage).run()
    result.wall_s = round(time.monotonic() - started, 2)
    return result
