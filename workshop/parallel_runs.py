"""Run many (stage, scenario) pairs, each in its own child process, several at
once, and collect their results: what `make demo` and the notebooks do.

Separate processes keep one run's load generator and control loop from
competing with another's for the GIL, and a child that is interrupted still
cleans up its own replicas. Parent and child speak through this module only:
`child_command()` builds the child's command line, `child_main()` (this
module's `__main__`) reads it and prints the ScenarioResult as JSON.
"""

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from .interrupts import stop_on_sigterm
from .manifests import load_stage
from .scenarios import SCENARIOS, ScenarioResult
from .stages import ROOT

CHILD_TIMEOUT_S = 300
# Runs at once on the local backend. Most of a run is waiting (for a grace
# period, a probe, a restart): two cores keep up with 6, each at 500 requests/s.
JOBS = 6


def child_command(stage, scenario, backend, quick, backend_options):
    return [sys.executable, "-m", __spec__.name, json.dumps(
        {"stage": stage, "scenario": scenario, "backend": backend, "quick": quick,
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
            result = run_scenario(backend, request["stage"], request["scenario"], quick=request["quick"])
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
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()


def run_one(children, stage, scenario, backend, quick, backend_options):
    child = children.start(child_command(stage, scenario, backend, quick, backend_options))
    try:
        stdout, stderr = child.communicate(timeout=CHILD_TIMEOUT_S)
    finally:
        children.finished(child)
    if child.returncode != 0:
        raise RuntimeError(f"{stage} {scenario} failed:\n{stderr}")
    return ScenarioResult(**json.loads(stdout))


def longest_first(pairs):
    """The runs in the order to start them: the longest first, so that the
    last one to finish is a short one. A run that deletes pods waits for them
    for up to the stage's grace period."""
    grace_s = {stage: load_stage(stage).grace_s for stage in {stage for stage, _ in pairs}}

    def expected_s(pair):
        stage, scenario = pair
        cls = SCENARIOS[scenario]
        return cls.max_s / 2 + (grace_s[stage] if cls.deletes_pods else 0)
    return sorted(pairs, key=expected_s, reverse=True)


def run_all(stages, scenarios, backend="local", jobs=JOBS, quick=False, progress=print, backend_options=None):
    """Every scenario on every stage; returns results in (scenario, stage) order.
    Each child makes its own backend with `backend_options`."""
    pairs = [(stage, scenario) for scenario in scenarios for stage in stages]
    jobs = 1 if backend != "local" else jobs  # one cluster namespace: one run at a time
    started = time.monotonic()
    results = {}
    children = Children()
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = {pool.submit(run_one, children, stage, scenario, backend, quick, backend_options or {}):
                   (stage, scenario)
                   for stage, scenario in longest_first(pairs)}
        for done, future in enumerate(as_completed(futures), 1):
            stage, scenario = futures[future]
            result = future.result()
            results[(stage, scenario)] = result
            progress(f"[{done:>2}/{len(pairs)}] {time.monotonic() - started:5.1f} s  {scenario:<15} "
                     f"{stage:<12} lost {result.lost}/{result.sent}")
    except BaseException:
        children.stop_all()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return [results[pair] for pair in pairs]


if __name__ == "__main__":
    sys.exit(child_main())
