"""Failure scenarios: each deploys a stage, puts load on it with the
endpoint-aware client, does one thing to the Deployment, and returns a
ScenarioResult. Data flows one way: scenario -> backend + load -> result.

Every stage is deployed with ECHO_FAULTS=1, so crash and hang can be sent to
one replica the same way on a real cluster.
"""

import statistics
import time
from dataclasses import asdict, dataclass, field

from .client import echo_once, send_fault
from .stages import resolve

RATE = 500             # requests per second: several runs share two cores
TIMEOUT_S = 1.0        # a request unanswered for this long is lost
SLOW_MS = 100          # an echo slower than this waited for something
SETTLE_S = 0.5         # load keeps running this long after the event is over


@dataclass
class ScenarioResult:
    stage: str
    scenario: str
    backend: str
    sent: int = 0
    answered: int = 0
    lost: int = 0
    retried: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    slow: int = 0                    # answered, but slower than SLOW_MS
    recover_s: float | None = None   # event -> back to normal (see each scenario)
    rollout_s: float | None = None
    restarts: int = 0
    crash_log_records: int | None = None
    early: int | None = None         # sent to a replica before it could answer
    lost_to_hung: int | None = None
    sent_to_hung: int | None = None
    duration_s: float = 0            # of the load
    wall_s: float = 0                # of the whole run, deployment included
    timeline: list = field(default_factory=list)  # (t s, latency ms or None if lost)

    def to_dict(self):
        return asdict(self)


class Scenario:
    """A run of one scenario: load for at most `max_s`, `act(t)` called as it runs."""

    name = "scenario"
    max_s = 20
    timeout_s = TIMEOUT_S
    event_at_s = 1.0

    def __init__(self, backend, stage, quick=False):
        self.backend = backend
        self.stage = resolve(stage)
        self.quick = quick
        self.result = ScenarioResult(stage=self.stage, scenario=self.name, backend=backend.name)
        self.event_t = None     # when the event happened, in load-time seconds
        self.done_t = None      # when the scenario saw things back to normal

    def run(self):
        self.backend.deploy(self.stage, env={"ECHO_FAULTS": "1"})
        self.wait_serving()
        self.restarts_before = sum(p.restarts for p in self.backend.pods())
        load = self.backend.start_load(rate=RATE, timeout_s=self.timeout_s, max_s=self.max_s)
        while not load.finished():
            if self._tick(load.elapsed()):
                load.stop()
            time.sleep(0.01)  # the scenario's pace: it acts between looks at the Deployment
        self._summarise(load.result())
        self.finish()
        return self.result

    def _tick(self, t):
        """Act once, then watch for recovery; True once it is time to stop."""
        if self.done_t is not None:
            return t >= self.done_t + SETTLE_S
        if self.event_t is None:
            if t >= self.event_at_s:
                self.event_t = t
                self.act()
        elif self.recovered(t):
            self.done_t = t
        return False

    def act(self):
        """Do the scenario's one thing to the Deployment."""

    def recovered(self, t):
        """True once the Deployment is back to normal after act(); by default,
        two seconds after the event (Steady does nothing at 1 s)."""
        return t >= 3

    def finish(self):
        """Fill in scenario-specific fields once the load has stopped."""

    def _summarise(self, outcome):
        r = self.result
        r.sent, r.answered, r.lost, r.retried = outcome.sent, outcome.answered, outcome.lost, outcome.retried
        latencies_ms = sorted(s[1] * 1000 for s in outcome.samples if s[1] is not None)
        if latencies_ms:
            r.p50_ms = round(statistics.median(latencies_ms), 3)
            r.p99_ms = round(latencies_ms[min(len(latencies_ms) - 1, int(len(latencies_ms) * 0.99))], 3)
            r.max_ms = round(latencies_ms[-1], 3)
        r.slow = sum(ms > SLOW_MS for ms in latencies_ms)
        r.restarts = sum(p.restarts for p in self.backend.pods()) - self.restarts_before
        r.duration_s = round(max((s[0] for s in outcome.samples), default=0), 2)
        r.timeline = thin([(round(t, 3), None if lat is None else round(lat * 1000, 3))
                           for t, lat, _ in outcome.samples])
        self.samples = outcome.samples

    # -- helpers --

    def wait_serving(self, timeout_s=30):
        """Start the load only once every endpoint in the feed answers: a
        stage without a readiness probe is "ready" before it listens."""
        deadline = time.monotonic() + timeout_s
        while True:
            _, endpoints = self.backend.feed.snapshot()
            if len(endpoints) >= 1 and all(echo_once(e.address) for e in endpoints):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.stage} not serving after {timeout_s} s: {self.backend.pods()}")

    def pick_victim(self):
        pods = sorted((p for p in self.backend.pods() if p.ready and not p.terminating), key=lambda p: p.name)
        return pods[0]


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


class RollingRestart(Scenario):
    """`kubectl rollout restart`: every replica replaced under load, for at
    least `min_s` so a zero-loss claim stands on thousands of requests."""

    name = "rolling-restart"
    max_s = 40
    min_s = 11

    def act(self):
        self.backend.rollout_restart()

    def recovered(self, t):
        if self.result.rollout_s is None and self.backend.rollout_complete():
            self.result.rollout_s = round(t - self.event_t, 2)
        return (self.result.rollout_s is not None and t >= self.min_s
                and not any(p.terminating for p in self.backend.pods()))


class PodKill(Scenario):
    """`kubectl delete pod`: one replica terminated the polite way."""

    name = "pod-kill"
    max_s = 30

    def act(self):
        self.victim = self.pick_victim().name
        self.backend.delete_pod(self.victim)

    def recovered(self, t):
        names = {p.name for p in self.backend.pods()}
        back = self.victim not in names and self.backend.rollout_complete()
        if back and self.result.recover_s is None:
            self.result.recover_s = round(t - self.event_t, 2)
        return back


class Crash(Scenario):
    """A crash fault: the replica dies; the kubelet restarts it."""

    name = "crash"
    max_s = 30

    def act(self):
        victim = self.pick_victim()
        self.victim = victim.name
        self.log_before = len(self.backend.logs(self.victim).splitlines())
        send_fault(victim.address, "crash")

    def recovered(self, t):
        pod = next((p for p in self.backend.pods() if p.name == self.victim), None)
        back = pod is not None and pod.restarts > 0 and pod.ready
        if back and self.result.recover_s is None:
            self.result.recover_s = round(t - self.event_t, 2)
        return back

    def finish(self):
        """How many log records the crash left: what `kubectl logs --previous`
        shows between the crash and the restart, one line one record."""
        lines = self.backend.logs(self.victim).splitlines()[self.log_before:]
        after_crash = []
        for line in lines:
            if "listening on" in line:
                break  # the restarted container's first line
            after_crash.append(line)
        self.result.crash_log_records = len(after_crash)


class Hang(Scenario):
    """A hang fault: the replica's loop freezes, its process lives on. How long
    until it is out of rotation, and what is lost until then?"""

    name = "hang"

    @property
    def max_s(self):
        return 14 if self.quick else 16

    def act(self):
        victim = self.pick_victim()
        self.victim, self.victim_address = victim.name, victim.address
        send_fault(victim.address, "hang")

    def recovered(self, t):
        _, endpoints = self.backend.feed.snapshot()
        if self.result.recover_s is None and self.victim_address not in {e.address for e in endpoints}:
            self.result.recover_s = round(t - self.event_t, 2)
        return False  # run the full time: 01-02 never recover, and that is the point

    def finish(self):
        """Requests sent to the victim from its first loss on: the loop froze
        a moment after the fault was sent, not at the moment itself."""
        to_victim = [s for s in self.samples if s[2] == self.victim_address and s[0] >= self.event_t]
        first_lost = next((i for i, s in enumerate(to_victim) if s[1] is None), len(to_victim))
        to_hung = to_victim[first_lost:]
        self.result.sent_to_hung = len(to_hung)
        self.result.lost_to_hung = sum(s[1] is None for s in to_hung)


class SlowStart(Scenario):
    """A rollout to replicas that take 2 s to initialise (ECHO_STARTUP_DELAY).
    Requests sent to a replica before it listens wait for it — or are lost."""

    name = "slow-start"
    max_s = 40
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

    def recovered(self, t):
        if self.result.rollout_s is None and self.backend.rollout_complete():
            self.result.rollout_s = round(t - self.event_t, 2)
        return (self.result.rollout_s is not None and t >= self.event_t + self.startup_delay_s + 1
                and not any(p.terminating for p in self.backend.pods()))


class ScaleDown(Scenario):
    """`kubectl scale --replicas=1`: two replicas terminated under load."""

    name = "scale-down"
    max_s = 30

    def act(self):
        self.backend.scale(1)

    def recovered(self, t):
        pods = self.backend.pods()
        done = len(pods) == 1 and pods[0].ready
        if done and self.result.recover_s is None:
            self.result.recover_s = round(t - self.event_t, 2)
        return done


SCENARIOS = {cls.name: cls for cls in (Steady, RollingRestart, PodKill, Crash, Hang, SlowStart, ScaleDown)}


def run_scenario(backend, stage, name, quick=False):
    """Run one scenario on a fresh deployment of `stage`; the caller owns the backend."""
    started = time.monotonic()
    result = SCENARIOS[name](backend, stage, quick=quick).run()
    result.wall_s = round(time.monotonic() - started, 2)
    return result
