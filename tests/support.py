"""Helpers the tests share: start a stage as a real process, talk to it over
real ZeroMQ on loopback, and wait for conditions with a bound on every wait."""

import time

import zmq

from bench.attackers import until
from bench.memory_limit import stage_constant  # noqa: F401  (for the tests)
from workshop.process import ServerProcess, free_port  # noqa: F401  (free_port: for the tests)
from workshop.stages import ROOT, STAGES_DIR, all_stages  # noqa: F401  (ROOT, STAGES_DIR: for the tests)

STAGES = all_stages()


def stages_from(first):
    """The stages that have a capability: `first` and every later one."""
    return [s for s in STAGES if s >= first]


def wait_for(condition, timeout, interval=0.02, message="condition"):
    """Poll `condition` until it returns something truthy; fail after `timeout` s."""
    result = until(condition, timeout, interval)
    if not result:
        raise AssertionError(f"timed out after {timeout} s waiting for {message}")
    return result


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
    """One stage's echo_server.py as a real child process on loopback, its
    stdout and stderr kept apart (the logging tests read both)."""

    def __init__(self, stage, tmp_path, host="127.0.0.1", **env):
        self.stage = stage
        self.port = free_port()
        self.endpoint = f"tcp://{host}:{self.port}"
        env = {"ECHO_BIND": self.endpoint, **env}
        if stage >= "05":
            env.setdefault("METRICS_PORT", free_port())
        self.process = ServerProcess.of_stage(stage, env, tmp_path / f"{stage}-{self.port}.stdout",
                                              stderr_path=tmp_path / f"{stage}-{self.port}.stderr")
        self.env = self.process.env

    def start(self, wait_ready=True):
        self.process.start()
        if wait_ready:
            self.process.wait_serving(self.endpoint)
        return self

    def send_signal(self, signum):
        self.process.signal(signum)

    def wait_exit(self, timeout=10):
        return self.process.wait(timeout)

    def running(self):
        return self.process.running()

    def stdout(self):
        return self.process.output()

    def stderr(self):
        return self.process.errors()

    def stop(self):
        self.process.kill()

