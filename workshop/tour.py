"""A quick tour: start each stage on loopback and show its new capability at
work, one line per stage. No cluster needed; takes a few seconds."""

import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.request import urlopen

import zmq

from .client import send_fault
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


def show_01(workdir):
    session = Session("01-plain", workdir, ECHO_FAULTS=1)
    started = time.perf_counter()
    answered = session.pipeline(1000)
    elapsed_ms = (time.perf_counter() - started) * 1000
    send_fault(session.endpoint, "crash")
    code = session.process.wait(10)
    session.close()
    return f"echoed {answered}/1000 pipelined in {elapsed_ms:.0f} ms; a crash ends it (exit {code}): restarting is Kubernetes' job"


def show_02(workdir):
    session = Session("02-logging", workdir, ECHO_FAULTS=1)
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


def show_03(workdir):
    session = Session("03-probes", workdir, ECHO_FAULTS=1)
    healthy, _ = healthcheck("03-probes", session.endpoint)
    send_fault(session.endpoint, "hang")
    hung, hung_ms = healthcheck("03-probes", session.endpoint)
    session.close()
    return f"liveness check exits {healthy} while serving, {hung} after a hang fault (in {hung_ms:.0f} ms)"


def show_04(workdir):
    session = Session("04-shutdown", workdir)
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


def show_05(workdir):
    session = Session("05-metrics", workdir)
    before = requests_counted(session.metrics_port)
    session.pipeline(500)
    after = requests_counted(session.metrics_port)
    session.close()
    return f"/metrics: echo_requests_total rose by {after - before:.0f} for 500 echoes"


SHOWS = {"01-plain": show_01, "02-logging": show_02, "03-probes": show_03,
         "04-shutdown": show_04, "05-metrics": show_05}


def run():
    with tempfile.TemporaryDirectory(prefix="echo-tour-") as workdir:
        for stage in all_stages():
            print(f"{stage:<12} {SHOWS[stage](workdir)}", flush=True)
