"""How long `demo` will take, said before it starts and as it goes.

Computed from what the runs are: each scenario's own guess of its load's
length (`Scenario.expected_s`, from the stage's spec: its grace period, its
probes), plus what a run costs around it on the backend. So the estimate
stays true when a stage or a scenario is added or changed.

On kube the runs go one at a time (one namespace), and each also pays for
what a cluster does around the load (below, for a default minikube: docker
driver, images already on the node). Teardown is not measured: the previous
run's pods are deleted without a grace period.
"""

from dataclasses import dataclass

from .manifests import load_stage
from .scenarios import SCENARIOS

LOCAL_RUN_S = 2            # a local run beyond its load: processes started, every endpoint answering
KUBE_TEARDOWN_S = 3        # the previous Deployment and its pods deleted, gracePeriodSeconds=0
KUBE_POD_START_S = 3       # a container started from an image on the node
KUBE_JOB_START_S = 5       # the load Job's pod scheduled, Python started, every endpoint answering
KUBE_RESULT_S = 1          # the load told to stop, its last lines read back


@dataclass
class Estimate:
    per_scenario: dict     # scenario -> seconds, all its stages
    total_s: float

    def line(self):
        """One line for the start of a demo."""
        parts = ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in self.per_scenario.items())
        return f"estimated {self.total_s / 60:.0f} min (per scenario, min: {parts})"


def run_s(spec, scenario, backend):
    """One run's expected seconds: its load, and what the backend adds."""
    load_s = SCENARIOS[scenario].expected_s(spec)
    if backend != "kube":
        return load_s + LOCAL_RUN_S
    first_ready_s = sum(probe.period_s for probe in (spec.startup, spec.readiness) if probe is not None)
    return KUBE_TEARDOWN_S + KUBE_POD_START_S + first_ready_s + KUBE_JOB_START_S + load_s + KUBE_RESULT_S


def estimate(stages, scenarios, backend, jobs=1):
    """The demo's Estimate: on kube the runs one after the other; locally
    `jobs` at once (roughly the sum shared among them)."""
    specs = {stage: load_stage(stage) for stage in stages}
    per_scenario = {name: sum(run_s(specs[stage], name, backend) for stage in stages) for name in scenarios}
    at_once = 1 if backend == "kube" else max(1, jobs)
    return Estimate(per_scenario, sum(per_scenario.values()) / at_once)


def left_s(pairs_left, backend, jobs=1):
    """Seconds the runs not finished yet should take, (stage, scenario) pairs."""
    specs = {}
    total = 0.0
    for stage, scenario in pairs_left:
        spec = specs.setdefault(stage, load_stage(stage))
        total += run_s(spec, scenario, backend)
    return total / (1 if backend == "kube" else max(1, jobs))
