"""One exercise per stage, graded by the driver: the attendee changes the
stage as the chapter says, then runs

    python -m workshop exercise 04

which runs what shows the change (one of the scenarios, or a check of its
own) on the stage as it now is, and says "done" with what it saw (exit 0),
"not yet" with what it saw instead (1), or why it cannot grade it on this
machine (3: a scenario with no figure here). A stage with no exercise: 2.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.request import urlopen

from .client import echo_once, wait_for_first_echo
from .process import ServerProcess, free_port
from .stages import resolve, stage_dir


@dataclass
class Exercise:
    task: str          # what to change, as the chapter says it
    check: object      # (stage, backend name) -> (done? or None: cannot tell here, what was seen)


@dataclass
class ByScenario:
    """A check that runs one of the scenarios and reads its ScenarioResult."""

    scenario: str
    done: object       # ScenarioResult -> bool
    seen: object       # ScenarioResult -> what to say

    def __call__(self, stage, backend):
        from .parallel_runs import run_all
        (result,) = run_all([stage], [self.scenario], backend=backend, progress=lambda line: None,
                            reuse_earlier=False)  # the attendee's changed stage, run
        if result.no_figure:
            return None, result.no_figure
        return self.done(result), self.seen(result)


def bytes_echoed_counted(stage, backend):
    """Start the stage here, echo known bytes, read echo_bytes_total (the
    identity frame and the first, readiness echo may be counted too)."""
    endpoint, metrics_port = f"tcp://127.0.0.1:{free_port()}", free_port()
    with tempfile.TemporaryDirectory(prefix="echo-exercise-") as workdir:
        server = ServerProcess.of_stage(stage, {"ECHO_BIND": endpoint, "METRICS_PORT": metrics_port},
                                        Path(workdir) / "server.log").start()
        try:
            server.wait_serving(endpoint)
            answered = sum(echo_once(endpoint, payload=b"x" * 123) for _ in range(10))
            with urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
                text = response.read().decode()
        finally:
            server.kill()
    counted = [line for line in text.splitlines() if line.startswith("echo_bytes_total")]
    if not counted:
        return False, "no echo_bytes_total on /metrics"
    value = float(counted[0].split()[-1])
    return 10 * 123 <= value <= 2000, f"echo_bytes_total {value:.0f} after {answered} echoes of 123 bytes"


def drain_timeout_capped(stage, backend):
    """DRAIN_TIMEOUT_S=61 must be refused in one line, exit 2; 60 still taken."""
    def start(value):
        env = {**os.environ, "ECHO_BIND": f"tcp://127.0.0.1:{free_port()}", "METRICS_PORT": str(free_port()),
               "DRAIN_TIMEOUT_S": value}
        return subprocess.Popen([sys.executable, "echo_server.py"], cwd=stage_dir(stage), env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), env["ECHO_BIND"]
    refused, _ = start("61")
    try:
        output, _ = refused.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        refused.kill()
        return False, "DRAIN_TIMEOUT_S=61: still running after 10 s"
    if refused.returncode != 2 or "DRAIN_TIMEOUT_S" not in output:
        return False, f"DRAIN_TIMEOUT_S=61: exit {refused.returncode}, {output.strip()[:200]!r}"
    taken, endpoint = start("60")
    try:
        wait_for_first_echo(endpoint, timeout_s=10, still_running=lambda: taken.poll() is None)
    except (RuntimeError, TimeoutError):
        return False, "DRAIN_TIMEOUT_S=60 (still allowed) did not start"
    finally:
        taken.kill()
        taken.wait()
    return True, f"DRAIN_TIMEOUT_S=61: exit 2, {json.loads(output.splitlines()[-1])['message']}"


CANNOT_GRADE = 3

EXERCISES = {
    "01": Exercise(
        "Set `replicas: 1` in k8s/deployment.yaml, then delete that one pod under load (pod-kill): with no "
        "other replica, requests are lost while it is replaced.",
        ByScenario("pod-kill", lambda r: r.lost_by_cause.get("no-endpoint", 0) > 0,
                   lambda r: f"lost {r.lost} of {r.sent}: {r.lost_by_cause or 'none'}")),
    "02": Exercise(
        "Remove the `except Exception:` branch of main() in echo_server.py, then crash a replica (crash): "
        "the traceback is loose lines again, not one record.",
        ByScenario("crash", lambda r: (r.crash_log_records or 0) > 1,
                   lambda r: f"{r.crash_log_records} log lines after the crash")),
    "03": Exercise(
        "Delete the startupProbe and the readinessProbe from k8s/deployment.yaml (either alone holds "
        "traffic back until the socket listens), then roll out slow starters (slow-start): requests go to "
        "replicas that do not listen yet.",
        ByScenario("slow-start", lambda r: (r.early or 0) > 0,
                   lambda r: f"{r.early} requests sent early, slowest answer {r.max_ms:.0f} ms")),
    "04": Exercise(
        "Set terminationGracePeriodSeconds to 2 in k8s/deployment.yaml (shorter than preStop and the drain), "
        "then roll out (rolling-restart): a pod still draining when the grace runs out is SIGKILLed.",
        ByScenario("rolling-restart", lambda r: r.sigkills > 0,
                   lambda r: f"{r.sigkills} SIGKILL, {r.lost} lost")),
    "05": Exercise(
        "Add a counter echo_bytes_total (the bytes of every message echoed) to echo_server.py; the grader "
        "echoes 10 messages of 123 bytes and reads /metrics.",
        bytes_echoed_counted),
    "06": Exercise(
        "Raise MAX_MESSAGE_BYTES to 2_000_000 and QUEUED_REPLIES to 2_000 in echo_server.py, then send "
        "megabyte frames (hostile-client): what one peer may queue is now about 4 GB (2,008 messages of up "
        "to 2 MB), far over the 256 MiB limit.",
        ByScenario("hostile-client", lambda r: (r.oom_kills or 0) > 0,
                   lambda r: f"OOM-killed {r.oom_kills} times, {r.lost} lost")),
    "07": Exercise(
        "Make DRAIN_TIMEOUT_S refuse more than a minute (60 s), in one record, exit code 2.",
        drain_timeout_capped),
}


def grade(stage, backend="local", out=print):
    """Run the stage's exercise; 0 when done, 1 when not yet, 2 without one."""
    stage = resolve(stage)
    exercise = EXERCISES.get(stage.split("-")[0])
    if exercise is None:
        out(f"{stage} has no exercise")
        return 2
    out(f"Exercise {stage}: {exercise.task}")
    scenario = getattr(exercise.check, "scenario", None)
    started = time.monotonic()
    out(f"running {scenario + ' on the ' + backend + ' backend' if scenario else 'its check'} ...")
    done, seen = exercise.check(stage, backend)
    verdict = "cannot grade it here" if done is None else "done" if done else "not yet"
    out(f"{verdict}: {seen} ({time.monotonic() - started:.0f} s)")
    return CANNOT_GRADE if done is None else 0 if done else 1
