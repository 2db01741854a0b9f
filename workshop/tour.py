"""A quick tour: start each stage on loopback and show its new capability at
work, one line per stage. No cluster needed; takes a few seconds.

What a stage adds is read from its own folder (CAPABILITIES): a new stage
needs no entry here unless it brings a capability the tour has no show for."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.request import urlopen

import zmq

from .client import send_fault
from .hostile import HostileClient
from .process import ServerProcess, free_port
from .stages import all_stages, stage_dir


class Session:
    """A started stage and a DEALER connected to it."""

    def __init__(self, stage, workdir, **env):
        self.port, self.metrics_port = free_port(), free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        env = {"ECHO_BIND": self.endpoint, "METRICS_PORT": self.metrics_port, **env}
        self.process = ServerProcess.of_stage(stage, env, Path(workdir) / f"{stage}.log").start()
        self.process.wait_serving(self.endpoint)
        self.context = zmq.Context()
        self.client = self.dealer()

    def dealer(self):
        client = self.context.socket(zmq.DEALER)
        client.linger = 0
        client.connect(self.endpoint)
        return client

    def send_many(self, count):
        for i in range(count):
            self.client.send(b"%d" % i)

    def collect(self, count, timeout_s=10):
        answered = 0
        while answered < count and self.client.poll(int(timeout_s * 1000)):
            self.client.recv()
            answered += 1
        return answered

    def pipeline(self, count):
        self.send_many(count)
        return self.collect(count)

    def close(self):
        self.client.close()
        self.context.term()
        self.process.kill()


def show_crash_only(stage, workdir):
    session = Session(stage, workdir, ECHO_FAULTS=1)
    started = time.perf_counter()
    answered = session.pipeline(1000)
    elapsed_ms = (time.perf_counter() - started) * 1000
    send_fault(session.endpoint, "crash")
    code = session.process.wait(10)
    session.close()
    return f"echoed {answered}/1000 pipelined in {elapsed_ms:.0f} ms; a crash ends it (exit {code}): restarting is Kubernetes' job"


def show_logging(stage, workdir):
    session = Session(stage, workdir, ECHO_FAULTS=1)
    send_fault(session.endpoint, "crash")
    session.process.wait(10)
    session.close()
    errors = [json.loads(line) for line in session.process.output().splitlines() if '"ERROR"' in line]
    lines = errors[0]["exception"].count("\n") + 1 if errors else 0
    return f"a crash leaves {len(errors)} JSON ERROR record carrying a {lines}-line traceback"


def healthcheck(stage, endpoint):
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "healthcheck.py"], cwd=stage_dir(stage),
                            env={"ECHO_BIND": endpoint}, capture_output=True, timeout=10)
    return result.returncode, (time.perf_counter() - started) * 1000


def show_probes(stage, workdir):
    session = Session(stage, workdir, ECHO_FAULTS=1)
    healthy, _ = healthcheck(stage, session.endpoint)
    send_fault(session.endpoint, "hang")
    hung, hung_ms = healthcheck(stage, session.endpoint)
    session.close()
    return f"liveness check exits {healthy} while serving, {hung} after a hang fault (in {hung_ms:.0f} ms)"


def show_shutdown(stage, workdir):
    session = Session(stage, workdir)
    session.send_many(2000)
    started = time.perf_counter()
    session.process.signal(signal.SIGTERM)
    answered = session.collect(2000, timeout_s=5)
    code = session.process.wait(10)
    elapsed = time.perf_counter() - started
    session.close()
    return f"SIGTERM with 2000 requests in flight: {answered} answered, exit {code} after {elapsed:.2f} s"


def requests_counted(metrics_port):
    with urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2) as response:
        text = response.read().decode()
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith("echo_requests_total")))


def show_metrics(stage, workdir):
    session = Session(stage, workdir)
    before = requests_counted(session.metrics_port)
    session.pipeline(500)
    after = requests_counted(session.metrics_port)
    session.close()
    return f"/metrics: echo_requests_total rose by {after - before:.0f} for 500 echoes"


def show_limits(stage, workdir, attack_frames=20):
    """A hostile client's megabyte frames beside a good client's echoes: the
    replica's peak memory stays where it was, since libzmq drops that peer at
    each first frame (and it reconnects, about ten times a second); a stage
    without limits would queue every one. Its peak is read from /proc (Linux)."""
    session = Session(stage, workdir)
    hostile = HostileClient(session.endpoint).start()
    try:
        answered = session.pipeline(500)
        deadline = time.monotonic() + 10
        while hostile.sent < attack_frames and time.monotonic() < deadline:
            answered += session.pipeline(10)  # the good client keeps asking meanwhile
            time.sleep(0.05)  # its pace
        peak = peak_bytes(session.process.popen.pid)
    finally:
        hostile.stop()
        session.close()
    memory = f", peak {peak / 1e6:.0f} MB" if peak else ""
    return (f"beside {hostile.sent} megabyte frames, their sender dropped {hostile.dropped} times: "
            f"{answered} echoed{memory}")


def show_settings(stage, workdir):
    result = subprocess.run([sys.executable, "echo_server.py"], cwd=stage_dir(stage),
                            env={**os.environ, "ECHO_BIND": "tcp://*:99999"}, capture_output=True, text=True,
                            timeout=10)
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    return f"ECHO_BIND=tcp://*:99999: exit {result.returncode}, one record: {record['message'].split(': ')[0]}"


def peak_bytes(pid):
    """A process's peak resident memory (VmHWM), or None where /proc has none."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return int(status.split("VmHWM:")[1].split()[0]) * 1024


# Each capability a stage can add, in the order the stages add them: how to
# tell from a stage's own folder that it has it, and its one-line show.
CAPABILITIES = [
    ("crash-only echo", lambda folder: True, show_crash_only),
    ("logging", lambda folder: "import logbook" in source(folder), show_logging),
    ("probes", lambda folder: (folder / "healthcheck.py").is_file(), show_probes),
    ("graceful shutdown", lambda folder: "set_wakeup_fd" in source(folder), show_shutdown),
    ("metrics", lambda folder: "import prometheus_client" in source(folder), show_metrics),
    ("limits", lambda folder: "MAXMSGSIZE" in source(folder), show_limits),
    ("checked settings", lambda folder: "def setting(" in source(folder), show_settings),
]


def source(folder):
    return (folder / "echo_server.py").read_text()


def capabilities(stage):
    folder = stage_dir(stage)
    return [name for name, has, _ in CAPABILITIES if has(folder)]


def lesson(stage, previous):
    """The capabilities a stage adds to the one before it."""
    return [name for name in capabilities(stage) if previous is None or name not in capabilities(previous)]


def run():
    shows = {name: show for name, _, show in CAPABILITIES}
    previous = None
    with tempfile.TemporaryDirectory(prefix="echo-tour-") as workdir:
        for stage in all_stages():
            lines = [shows[name](stage, workdir) for name in lesson(stage, previous)]
            lines = lines or ["(nothing the tour knows how to show: see its chapter)"]
            print(f"{stage:<12} {'; '.join(lines)}", flush=True)
            previous = stage
