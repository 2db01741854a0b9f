"""How `run_all` schedules the kube runs: the demo's KUBE_JOBS at once, each
in a namespace of its own, the latency runs last and one at a time; the
notebooks' one at a time in cloudnative-echo. And why KUBE_JOBS is what it
is: the pods of that many runs fit what a default minikube leaves."""

import dataclasses
import json
import os
import subprocess
import sys
import threading

import pytest

from support import ROOT, STAGES, STAGES_DIR
from workshop import parallel_runs
from workshop.backends.cluster_job import job_manifest
from workshop.manifests import quantity_bytes, render
from workshop.scenarios import SCENARIOS, ScenarioResult

WAIT_S = 10  # every wait below is bounded by this


class FakeRuns:
    """Stands in for run_one: records what ran, with what, how many at once.
    The first `hold` runs wait until that many run together, so a schedule
    that runs fewer at once fails (after WAIT_S) instead of passing by luck."""

    def __init__(self, hold):
        self.hold, self.lock, self.all_in = hold, threading.Lock(), threading.Event()
        self.running, self.most, self.started, self.options = 0, 0, [], []
        self.at_start = {}  # (stage, scenario) -> (runs at once, runs finished) when it began
        self.finished = 0

    def __call__(self, children, stage, scenario, backend, backend_options):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
            self.started.append((stage, scenario))
            self.options.append(dict(backend_options))
            self.at_start[stage, scenario] = (self.running, self.finished)
            if self.running >= self.hold:
                self.all_in.set()
            first = len(self.started) <= self.hold
        if first:
            assert self.all_in.wait(WAIT_S), f"never {self.hold} runs at once"
        with self.lock:
            self.running -= 1
            self.finished += 1
        return ScenarioResult(stage=stage, scenario=scenario, backend=backend)


def run(monkeypatch, fake, **options):
    monkeypatch.setattr(parallel_runs, "run_one", fake)
    stages, scenarios = STAGES[:3], ["rolling-restart", "crash", "steady", "hang"]
    results = parallel_runs.run_all(stages, scenarios, backend="kube", progress=lambda line: None,
                                    backend_options={"context": "minikube", "build_images": False}, **options)
    assert [(r.stage, r.scenario) for r in results] == [(st, sc) for sc in scenarios for st in stages]
    return fake


@pytest.mark.timeout(60)
def test_the_demo_runs_kube_jobs_at_once_each_in_its_namespace_and_steady_last_alone(monkeypatch):
    jobs = parallel_runs.KUBE_JOBS
    fake = run(monkeypatch, FakeRuns(hold=jobs), jobs=jobs)
    assert fake.most == jobs
    assert all(o == {"context": "minikube", "build_images": False, "own_namespace": True} for o in fake.options)
    quiet = [pair for pair in fake.started if SCENARIOS[pair[1]].measures_latency]  # steady
    busy = len(fake.started) - len(quiet)
    assert quiet and fake.started[busy:] == quiet  # last...
    assert all(fake.at_start[pair] == (1, busy + i) for i, pair in enumerate(quiet))  # ...alone, one by one


@pytest.mark.timeout(60)
def test_the_notebooks_kube_runs_go_one_at_a_time_in_the_shared_namespace(monkeypatch):
    fake = run(monkeypatch, FakeRuns(hold=1))  # run_all as the notebooks call it: no jobs
    assert fake.most == 1
    assert all("own_namespace" not in o for o in fake.options)


# -- why KUBE_JOBS: the CPU and memory the runs' pods request, on a default minikube --

# `minikube start`: 2 CPUs and 2 GB by default (https://minikube.sigs.k8s.io/docs/start/).
MINIKUBE_CPU_M, MINIKUBE_MEMORY = 2000, 2000 * 10**6
# The kubelet's default hard eviction threshold is taken off what pods may request:
# memory.available<100Mi (https://kubernetes.io/docs/tasks/administer-cluster/reserve-compute-resources/).
EVICTION_MEMORY = 100 * 2**20
# What its control plane requests (kubeadm's manifests): kube-apiserver 250m, controller-manager 200m,
# scheduler 100m (cmd/kubeadm/app/phases/controlplane/manifests.go), etcd 100m and 100Mi
# (cmd/kubeadm/app/phases/etcd/local.go), CoreDNS 100m and 70Mi (cmd/kubeadm/app/phases/addons/dns/manifests.go).
CONTROL_PLANE_CPU_M, CONTROL_PLANE_MEMORY = 250 + 200 + 100 + 100 + 100, (100 + 70) * 2**20


def millicores(text):
    text = str(text)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def requests(pod_spec):
    (container,) = pod_spec["containers"]
    wanted = container["resources"]["requests"]
    return millicores(wanted["cpu"]), quantity_bytes(wanted["memory"])


def test_kube_jobs_runs_at_their_worst_fit_what_a_default_minikube_leaves():
    """A run's worst moment: a rolling restart of a stage whose old pods hold
    their grace, every new replica up while every old one still counts (the
    scheduler counts a pod until it is gone, kubernetes/kubernetes#96515),
    and its load generator. A pod that does not fit would stay Pending and a
    rollout waiting for it would be measured."""
    worst_cpu = worst_memory = 0
    for stage in STAGES:
        (deployment,) = [o for o in render(STAGES_DIR / stage / "k8s") if o["kind"] == "Deployment"]
        cpu, memory = requests(deployment["spec"]["template"]["spec"])
        pods = 2 * deployment["spec"]["replicas"]
        worst_cpu, worst_memory = max(worst_cpu, pods * cpu), max(worst_memory, pods * memory)
    load_cpu, load_memory = requests(job_manifest("j", "ns", [], 60)["spec"]["template"]["spec"])
    (prometheus,) = [o for o in render(ROOT / "k8s") if o["kind"] == "Deployment"]
    prometheus_cpu, prometheus_memory = requests(prometheus["spec"]["template"]["spec"])
    free_cpu = MINIKUBE_CPU_M - CONTROL_PLANE_CPU_M - prometheus_cpu
    free_memory = MINIKUBE_MEMORY - EVICTION_MEMORY - CONTROL_PLANE_MEMORY - prometheus_memory
    jobs = parallel_runs.KUBE_JOBS
    assert jobs * (worst_cpu + load_cpu) <= free_cpu and jobs * (worst_memory + load_memory) <= free_memory
    assert (jobs + 1) * (worst_cpu + load_cpu) > free_cpu  # the most that fit: CPU is what bounds it



@pytest.mark.timeout(60)
def test_runs_held_in_workshop_results_are_read_not_run_again(monkeypatch, tmp_path):
    """The tests' notebooks reuse the session's demo: a pair it holds (by the
    stage's short name too) is taken from it; the others, and another
    backend's results, run."""
    earlier = [ScenarioResult(stage=STAGES[0], scenario="crash", backend="kube", sent=7),
               ScenarioResult(stage=STAGES[1], scenario="crash", backend="local", sent=9)]
    path = tmp_path / "results.json"
    path.write_text(json.dumps([dataclasses.asdict(r) for r in earlier]))
    monkeypatch.setenv("WORKSHOP_RESULTS", str(path))
    fake = FakeRuns(hold=1)
    monkeypatch.setattr(parallel_runs, "run_one", fake)
    short = [stage.split("-")[0] for stage in STAGES[:2]]
    said = []
    results = parallel_runs.run_all(short, ["crash"], backend="kube", progress=said.append)
    assert fake.started == [(STAGES[1], "crash")]
    assert [(r.stage, r.sent) for r in results] == [(STAGES[0], 7), (STAGES[1], 0)]
    assert f"read from WORKSHOP_RESULTS={path}, not run again: crash on {STAGES[0]}" in said
    # a demo, or an exercise's grader, measures what is there now: it runs every pair
    parallel_runs.run_all(short, ["crash"], backend="kube", progress=said.append, reuse_earlier=False)
    assert fake.started[1:] == [(STAGES[0], "crash"), (STAGES[1], "crash")]


def test_workshop_run_reads_a_run_held_in_workshop_results(tmp_path):
    """`python -m workshop run` too (the tests' chapters read the session's demo)."""
    held = ScenarioResult(stage=STAGES[0], scenario="crash", backend="local", sent=12345, restarts=7)
    path = tmp_path / "results.json"
    path.write_text(json.dumps([dataclasses.asdict(held)]))
    run = subprocess.run([sys.executable, "-m", "workshop", "run", "--stage", STAGES[0].split("-")[0],
                          "--scenario", "crash"], cwd=ROOT, env={**os.environ, "WORKSHOP_RESULTS": str(path)},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "7 restart" in run.stdout, run.stdout  # not run: read
