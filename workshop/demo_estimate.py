"""How long `demo` will take, said before it starts and as it goes.

Computed from what the runs are: each scenario's own guess of its load's
length (`Scenario.expected_s`, from the stage's spec: its grace period, its
probes), plus what a run costs around it on the backend. So the estimate
stays true when a stage or a scenario is added or changed.

On kube each run also pays for what a cluster does around the load (below,
for a default minikube: docker driver, images already on the node), and the
runs are scheduled as `parallel_runs.run_all` does: one at a time in the
shared namespace (the notebooks), or `jobs` at once, each in a namespace of
its own, longest first, then the latency runs one at a time (the demo).
Runs at once are assumed not to slow each other down: most of a run is
waiting for a grace period, a probe or a restart, not work. Teardown is not
measured: the previous run's pods are deleted without a grace period.
"""

import heapq
from dataclasses import dataclass

from .manifests import load_stage
from .scenarios import SCENARIOS

LOCAL_RUN_S = 2            # a local run beyond its load: processes started, every endpoint answering
KUBE_TEARDOWN_S = 3        # shared namespace: the previous Deployment and its pods deleted, gracePeriodSeconds=0
KUBE_NAMESPACE_S = 1       # own namespace: it and its 5 objects created, then its deletion asked for
KUBE_POD_START_S = 3       # a container started from an image on the node
KUBE_JOB_START_S = 5       # the load Job's pod scheduled, Python started, every endpoint answering
KUBE_RESULT_S = 1          # the load told to stop, its last lines read back


@dataclass
class Estimate:
    per_scenario: dict     # scenario -> seconds, all its stages (on kube: its share of the demo's time)
    total_s: float

    def line(self):
        """One line for the start of a demo."""
        parts = ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in self.per_scenario.items())
        return f"estimated {self.total_s / 60:.0f} min (per scenario, min: {parts})"


def run_s(spec, scenario, backend, own_namespace=False):
    """One run's expected seconds: its load, and what the backend adds."""
    load_s = SCENARIOS[scenario].expected_s(spec)
    if backend != "kube":
        return load_s + LOCAL_RUN_S
    first_ready_s = sum(probe.period_s for probe in (spec.startup, spec.readiness) if probe is not None)
    setup_s = KUBE_NAMESPACE_S if own_namespace else KUBE_TEARDOWN_S
    return setup_s + KUBE_POD_START_S + first_ready_s + KUBE_JOB_START_S + load_s + KUBE_RESULT_S


def makespan_s(durations, jobs):
    """How long `durations` take, `jobs` at once, each started as soon as
    one ends, longest first (as run_all orders them)."""
    ends = [0.0] * max(1, jobs)
    for seconds in sorted(durations, reverse=True):
        heapq.heappush(ends, heapq.heappop(ends) + seconds)
    return max(ends)


def _kube_schedule(runs, jobs):
    """(total seconds, each run's share of them) for (scenario, seconds) runs on kube."""
    if jobs <= 1:
        return sum(s for _, s in runs), [s for _, s in runs]
    busy = [s for name, s in runs if not SCENARIOS[name].measures_latency]
    busy_s = makespan_s(busy, jobs) if busy else 0.0
    scale = busy_s / sum(busy) if busy else 0.0  # a busy run's share: its part of the packed wave
    shares = [s if SCENARIOS[name].measures_latency else s * scale for name, s in runs]
    return busy_s + sum(s for name, s in runs if SCENARIOS[name].measures_latency), shares


def _runs(pairs, backend, jobs, specs=None):
    """(scenario, seconds) of each (stage, scenario) pair; each stage's spec read once."""
    specs = specs or {stage: load_stage(stage) for stage in {stage for stage, _ in pairs}}
    own = backend == "kube" and jobs > 1
    return [(scenario, run_s(specs[stage], scenario, backend, own)) for stage, scenario in pairs]


def estimate(stages, scenarios, backend, jobs=1):
    """The demo's Estimate: locally `jobs` at once (roughly the sum shared
    among them); on kube as run_all schedules them."""
    specs = {stage: load_stage(stage) for stage in stages}
    pairs = [(stage, name) for name in scenarios for stage in stages]
    runs = _runs(pairs, backend, jobs, specs)
    if backend != "kube":
        per_scenario = {name: sum(s for n, s in runs if n == name) for name in scenarios}
        return Estimate(per_scenario, sum(per_scenario.values()) / max(1, jobs))
    total_s, shares = _kube_schedule(runs, jobs)
    per_scenario = {name: sum(share for (n, _), share in zip(runs, shares) if n == name) for name in scenarios}
    return Estimate(per_scenario, total_s)


def left_s(pairs_left, backend, jobs=1):
    """Seconds the runs not finished yet should take, (stage, scenario) pairs."""
    runs = _runs(pairs_left, backend, jobs)
    if backend != "kube":
        return sum(s for _, s in runs) / max(1, jobs)
    return _kube_schedule(runs, jobs)[0]
