"""Run many (stage, scenario) pairs, each in its own child process, several at
once, and collect their results: what `make demo` and the notebooks do.

Separate processes keep one run's load generator and control loop from
competing with another's for the GIL, and a child that is interrupted still
cleans up its own replicas. Parent and child speak through this module only:
`child_command()` builds the child's command line, `child_main()` (this
module's `__main__`) reads it and prints the ScenarioResult as JSON.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from .demo_estimate import left_s
from .interrupts import stop_on_sigterm
from .manifests import load_stage
from .scenarios import SCENARIOS, ScenarioResult
from .stages import ROOT, resolve

CHILD_TIMEOUT_S = 600
CLOSE_TIMEOUT_S = 30  # a child told to stop closes its backend within this
# Runs at once on the local backend. Most of a run is waiting (for a grace
# period, a probe, a restart): two cores keep up with 8, each at 150 requests/s (its
# servers, its load, its exec probes: at 500, eight runs wanted more than two cores, and
# the exec probes, a Python process each, took seconds to start and failed for it).
JOBS = 8
QUIET_JOBS = 2  # for the runs that measure latency: a core each
# Runs at once on a cluster, each in a namespace of its own (the demo's).
# What the pods request bounds it, not what they use (a fifth of a core a
# run, as above): a pod that does not fit stays Pending, and a rollout waiting
# for one would be measured. A default minikube (2 CPUs) leaves 1200m once its
# control plane and Prometheus have theirs; a run requests at most 400m:
# during a rolling restart of 01-03, 3 new replicas and 3 old ones held for
# their 30 s grace (the scheduler counts a pod until it is gone), 50m each,
# and its load generator's 100m. So 3 fit, at worst exactly; 4 would not
# (tests/test_kube_parallel.py sums it from the manifests).
KUBE_JOBS = 3


def child_command(stage, scenario, backend, backend_options):
    return [sys.executable, "-m", __spec__.name, json.dumps(
        {"stage": stage, "scenario": scenario, "backend": backend,
         "backend_options": backend_options})]


def child_main(argv=None):
    """In the child: run one scenario on a backend of its own; the result
    record is the only thing on stdout."""
    from .backends import make_backend
    from .scenarios import run_scenario
    (request,) = argv if argv is not None else sys.argv[1:]
    request = json.loads(request)
    stop_on_sigterm()
    try:
        with make_backend(request["backend"], **request["backend_options"]) as backend:
            result = run_scenario(backend, request["stage"], request["scenario"])
    except KeyboardInterrupt:
        return 130
    print(json.dumps(result.to_dict()))
    return 0


class Children:
    """The child processes running now, so an interrupted run can stop them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = set()
        self.stopping = False

    def start(self, command):
        with self.lock:
            if self.stopping:
                raise RuntimeError("stopping: no new runs")
            child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, start_new_session=True)
            self.running.add(child)
            return child

    def finished(self, child):
        with self.lock:
            self.running.discard(child)

    def stop_all(self):
        with self.lock:
            self.stopping = True
            children = list(self.running)
        for child in children:
            child.terminate()  # each child closes its backend on SIGTERM
        for child in children:
            try:
                child.wait(timeout=CLOSE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)  # the child and everything it started
                child.wait()


def run_one(children, stage, scenario, backend, backend_options):
    child = children.start(child_command(stage, scenario, backend, backend_options))
    try:
        stdout, stderr = child.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        # SIGTERM first: the child closes its backend (its processes, or its namespace on a
        # cluster) as on Ctrl-C; SIGKILL the whole group only if that does not end it.
        child.terminate()
        try:
            child.communicate(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)  # the child and everything it started
            child.wait()
        raise RuntimeError(f"{stage} {scenario} did not finish within {CHILD_TIMEOUT_S} s") from None
    finally:
        children.finished(child)
    if child.returncode != 0:
        raise RuntimeError(f"{stage} {scenario} failed:\n{stderr}")
    return ScenarioResult(**json.loads(stdout))


def longest_first(pairs):
    """The runs in the order to start them: the longest first, so that the
    last one to finish is a short one."""
    specs = {stage: load_stage(stage) for stage in {stage for stage, _ in pairs}}
    return sorted(pairs, key=lambda pair: SCENARIOS[pair[1]].expected_s(specs[pair[0]]), reverse=True)


def run_all(stages, scenarios, backend="local", jobs=None, progress=print, backend_options=None,
            reuse_earlier=True):
    """Every scenario on every stage; returns results in (scenario, stage) order.
    Each child makes its own backend with `backend_options`. Runs whose point
    is latency come last, a core each, when nothing else competes for the CPU.

    `jobs`: runs at once (default: JOBS locally, 1 on a cluster). On a cluster
    one run at a time shares the namespace cloudnative-echo (the notebooks);
    more than one get a namespace each, and the latency runs go one at a time.

    WORKSHOP_RESULTS names the results.json of an earlier demo on the same
    backend: the runs it holds are taken from it, not run again (the tests'
    notebooks read the demo that the tests ran a moment before), and the
    progress says so. `reuse_earlier=False` (the demo itself, an exercise's
    grader: their stages may have changed since) always runs."""
    pairs = [(resolve(stage), scenario) for scenario in scenarios for stage in stages]
    earlier = earlier_results(backend) if reuse_earlier else {}
    if earlier and any(pair in earlier for pair in pairs):
        progress(f"read from WORKSHOP_RESULTS={os.environ['WORKSHOP_RESULTS']}, not run again: "
                 + ", ".join(f"{scenario} on {stage}" for stage, scenario in pairs if (stage, scenario) in earlier))
    pairs_to_run = [pair for pair in pairs if pair not in earlier]
    quiet = [pair for pair in pairs_to_run if SCENARIOS[pair[1]].measures_latency]
    busy = [pair for pair in pairs_to_run if pair not in quiet]
    options = dict(backend_options or {})
    if backend == "local":
        jobs = jobs or JOBS
        quiet_jobs = min(jobs, QUIET_JOBS)
    else:
        jobs, quiet_jobs = jobs or 1, 1
        if jobs > 1:  # in one namespace, runs at once would see each other's pods and load them
            options["own_namespace"] = True
    started = time.monotonic()
    results = {pair: earlier[pair] for pair in pairs if pair in earlier}
    children = Children()

    def finished(stage, scenario, result):
        results[(stage, scenario)] = result
        left = left_s([pair for pair in pairs if pair not in results], backend, jobs)
        progress(f"[{len(results):>2}/{len(pairs)}] {time.monotonic() - started:5.1f} s  {scenario:<15} "
                 f"{stage:<12} lost {result.lost}/{result.sent}" + (f"  (about {left / 60:.0f} min left)" if left else ""))
    for wave, wave_jobs in ((longest_first(busy), jobs), (quiet, quiet_jobs)):
        run_wave(children, wave, wave_jobs, finished, backend, options)
    return [results[pair] for pair in pairs]


def earlier_results(backend):
    """(stage, scenario) -> ScenarioResult from WORKSHOP_RESULTS, if it is set."""
    path = os.environ.get("WORKSHOP_RESULTS")
    if not path:
        return {}
    results = [ScenarioResult(**r) for r in json.loads(Path(path).read_text())]
    return {(r.stage, r.scenario): r for r in results if r.backend == backend}


def run_wave(children, pairs, jobs, finished, *run_arguments):
    """The runs of `pairs`, `jobs` at once, in that order; `finished(stage,
    scenario, result)` as each ends. Interrupted (Ctrl-C, SIGTERM, a run
    that failed), it stops the runs still going before it waits for them."""
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = {pool.submit(run_one, children, stage, scenario, *run_arguments): (stage, scenario)
                   for stage, scenario in pairs}
        for future in as_completed(futures):
            finished(*futures[future], future.result())
    except BaseException:
        children.stop_all()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


if __name__ == "__main__":
    sys.exit(child_main())
