"""An echo server as a real child process: a stage's echo_server.py (or the
benchmark's baseline loop), its output in files, and the wait for its first
echo. The local backend, the tour, the tests and the benchmark all start
servers this one way."""

import os
import signal
import socket
import subprocess
import sys

from .client import wait_for_first_echo
from .stages import stage_dir


def free_port(host="127.0.0.1"):
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def reserve_port():
    """A port held for a server that binds every interface (as prometheus_client
    does) with SO_REUSEADDR: a bound, never-listening socket keeps the kernel
    from handing the port to anyone else (free_port() races with others),
    while the server's own bind still succeeds. Close it when the server is gone."""
    reservation = socket.socket()
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reservation.bind(("127.0.0.1", 0))
    return reservation


class ServerProcess:
    """`python <script>` in the script's folder, with `env` added to ours.

    stdout goes to `stdout_path`; stderr too, unless `stderr_path` is given.
    `launcher` is put before the interpreter's arguments (the local backend
    uses it to give the process PID 1's signal semantics)."""

    def __init__(self, script, env, stdout_path, stderr_path=None, launcher=()):
        self.script = script
        self.env = {**os.environ, **{k: str(v) for k, v in env.items()}}
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        self.launcher = list(launcher)
        self.popen = None

    @classmethod
    def of_stage(cls, stage, env, stdout_path, **options):
        return cls(stage_dir(stage) / "echo_server.py", env, stdout_path, **options)

    def start(self):
        with open(self.stdout_path, "ab") as out, open(self.stderr_path or os.devnull, "ab") as err:
            self.popen = subprocess.Popen(
                [sys.executable, *self.launcher, self.script.name], cwd=self.script.parent, env=self.env,
                stdout=out, stderr=err if self.stderr_path else subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C meant for the driver is not sent to servers
            )
        return self

    def wait_serving(self, endpoint, timeout_s=10):
        """Block until the server answers its first echo on `endpoint`."""
        try:
            return wait_for_first_echo(endpoint, timeout_s, still_running=self.running)
        except (RuntimeError, TimeoutError) as error:
            raise RuntimeError(f"{self.script.parent.name}: {error}\n{self.output()}") from None

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

    def output(self):
        """What the server wrote to stdout (and stderr, unless kept apart)."""
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def errors(self):
        """What it wrote to stderr, when kept apart."""
        path = self.stderr_path
        return path.read_text(errors="replace") if path and path.exists() else ""
