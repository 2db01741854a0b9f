"""Run many (stage, scenario) pairs, each in its own child process, several at
once, and collect their results. Separate processes keep one run's load
generator and control loop from competing with another's for the GIL, and a
child that is interrupted still cleans up its own replicas."""

import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

from .scenarios import ScenarioResult
from .stages import ROOT


class Children:
    """The child processes running now, so an interrupted battery can stop them."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = set()
        self.stopping = False

    def start(self, command):
        with self.lock:
            if self.stopping:
                raise RuntimeError("the battery is stopping")
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


def run_one(children, stage, scenario, backend, quick):
    command = [sys.executable, "-m", "workshop", "run", "--stage", stage, "--scenario", scenario,
               "--backend", backend, "--json"] + (["--quick"] if quick else [])
    child = children.start(command)
    try:
        stdout, stderr = child.communicate(timeout=300)
    finally:
        children.finished(child)
    if child.returncode != 0:
        raise RuntimeError(f"{stage} {scenario} failed:\n{stderr}")
    return ScenarioResult(**json.loads(stdout))


def run_battery(stages, scenarios, backend="local", jobs=3, quick=False, progress=print):
    """Every scenario on every stage; returns results in (scenario, stage) order."""
    pairs = [(stage, scenario) for scenario in scenarios for stage in stages]
    jobs = 1 if backend != "local" else jobs  # one cluster namespace: one run at a time
    started = time.monotonic()
    results = {}
    children = Children()
    pool = ThreadPoolExecutor(max_workers=jobs)
    try:
        futures = {pool.submit(run_one, children, stage, scenario, backend, quick): (stage, scenario)
                   for stage, scenario in pairs}
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
