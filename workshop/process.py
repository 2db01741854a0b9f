"""One stage's echo_server.py as a real child process, with its own log file."""

import os
import signal
import socket
import subprocess
import sys

from .stages import stage_dir


def free_port(host="127.0.0.1"):
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class StageProcess:
    def __init__(self, stage, env, log_path):
        self.stage = stage
        self.env = {**os.environ, **{k: str(v) for k, v in env.items()}}
        self.log_path = log_path
        self.popen = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                [sys.executable, "echo_server.py"], cwd=stage_dir(self.stage), env=self.env,
                stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for the driver is not sent to replicas
            )
        return self

    def running(self):
        return self.popen is not None and self.popen.poll() is None

    def exit_code(self):
        return self.popen.poll()

    def signal(self, signum):
        if self.running():
            self.popen.send_signal(signum)

    def wait(self, timeout):
        return self.popen.wait(timeout)

    def kill(self):
        """SIGKILL and reap; safe to call more than once."""
        if self.running():
            self.popen.send_signal(signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait()

    def logs(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
