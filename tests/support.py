"""Helpers the tests share: start a stage as a real process, talk to it over
real ZeroMQ on loopback, and wait for conditions with a bound on every wait."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import zmq

from workshop.process import free_port  # noqa: F401  (re-exported for the tests)

ROOT = Path(__file__).resolve().parent.parent
STAGES_DIR = ROOT / "stages"
STAGES = sorted(p.name for p in STAGES_DIR.iterdir() if (p / "echo_server.py").exists())


def stages_from(first):
    """The stages that have a capability: `first` and every later one."""
    return [s for s in STAGES if s >= first]


def wait_for(condition, timeout, interval=0.02, message="condition"):
    """Poll `condition` until it returns something truthy; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(interval)


class Client:
    """A DEALER connected to one endpoint; closes without lingering."""

    def __init__(self, endpoint, socket_type=zmq.DEALER):
        self.context = zmq.Context()
        self.socket = self.context.socket(socket_type)
        self.socket.linger = 0
        self.socket.connect(endpoint)

    def echo(self, frames, timeout_ms=2000):
        """Send `frames`, return the reply, or None if none came in time."""
        self.socket.send_multipart(frames)
        if self.socket.poll(timeout_ms):
            return self.socket.recv_multipart()
        return None

    def receive_all(self, count, timeout_s):
        """Collect up to `count` replies, stopping at the deadline."""
        replies = []
        deadline = time.monotonic() + timeout_s
        while len(replies) < count:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0 or not self.socket.poll(remaining_ms):
                break
            replies.append(self.socket.recv_multipart())
        return replies

    def close(self):
        self.socket.close()
        self.context.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EchoServer:
    """One stage's echo_server.py as a real child process on loopback."""

    def __init__(self, stage, tmp_path, host="127.0.0.1", **env):
        self.stage = stage
        self.port = free_port()
        self.endpoint = f"tcp://{host}:{self.port}"
        self.env = {**os.environ, "ECHO_BIND": self.endpoint, **{k: str(v) for k, v in env.items()}}
        if stage >= "05":
            self.env.setdefault("METRICS_PORT", str(free_port()))
        self.stdout_path = tmp_path / f"{stage}-{self.port}.stdout"
        self.stderr_path = tmp_path / f"{stage}-{self.port}.stderr"
        self.process = None

    def start(self, wait_ready=True):
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "echo_server.py"],
                cwd=STAGES_DIR / self.stage, env=self.env, stdout=out, stderr=err,
            )
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout=10):
        with Client(self.endpoint) as client:
            def answers():
                assert self.process.poll() is None, f"server exited: {self.stderr()}"
                return client.echo([b"ready?"], timeout_ms=100) == [b"ready?"]
            wait_for(answers, timeout, interval=0, message=f"{self.stage} to answer")

    def send_signal(self, signum):
        self.process.send_signal(signum)

    def wait_exit(self, timeout=10):
        return self.process.wait(timeout)

    def stdout(self):
        return self.stdout_path.read_text()

    def stderr(self):
        return self.stderr_path.read_text()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
