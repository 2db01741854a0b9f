"""A stage's server as a real process held to its Deployment's memory limit,
as the kubelet would hold it: inside a cgroup (v1 memory controller) with
resources.limits.memory, so an attack that would get a replica OOM-killed
gets this process OOM-killed too. Without a writable cgroup v1 memory
controller, the process runs free and its peak RSS (VmHWM) is compared with
the limit instead.

    with ContainedServer("01") as server:
        ...attack server.endpoint...
        server.peak_bytes(), server.oom_killed(), server.running()

ATTACKS_STAGES_DIR points the harness at another copy of stages/ (say a git
worktree of an older commit), to show that the attacks take the old code down.
"""

import ast
import itertools
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from workshop.manifests import render
from workshop.process import ServerProcess, free_port
from workshop.stages import STAGES_DIR, resolve

MEMORY_CGROUPS = Path("/sys/fs/cgroup/memory")
QUANTITY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}

# Put before the server's own arguments (ServerProcess's launcher): join the
# cgroup, optionally set the open-file soft limit a container runtime would
# give, then exec the server in the same process. Joining before exec means
# every page the server ever touches is charged to the cgroup.
JOIN_THEN_EXEC = ["-c", "import os, resource, sys\n"
                        "procs, nofile, *command = sys.argv[1:]\n"
                        "if procs: open(procs, 'w').write(str(os.getpid()))\n"
                        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
                        "if nofile: resource.setrlimit(resource.RLIMIT_NOFILE, (int(nofile), hard))\n"
                        "os.execv(sys.executable, [sys.executable, *command])\n"]


def stages_dir():
    return Path(os.environ.get("ATTACKS_STAGES_DIR") or STAGES_DIR)


def stage_path(stage):
    return stages_dir() / resolve(stage)


_REQUIRED = object()


def stage_constant(stage, name, default=_REQUIRED):
    """A number the stage's echo_server.py sets at module level (NAME = 4096,
    or 1024 * 1024): the tests size their attacks from the code they attack.
    `default` if it sets none (an older stage without that limit)."""
    source = (stage_path(stage) / "echo_server.py").read_text()
    match = re.search(rf"^{name}\s*=\s*(.+?)\s*(#.*)?$", source, re.MULTILINE)
    if match is None:
        if default is not _REQUIRED:
            return default
        raise LookupError(f"{stage}: echo_server.py sets no {name}")
    return _arithmetic(ast.parse(match.group(1), mode="eval").body)


def _arithmetic(node):
    """Numbers and + - * / // ** of numbers; nothing else is evaluated."""
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp):
        left, right = _arithmetic(node.left), _arithmetic(node.right)
        operations = {ast.Add: lambda: left + right, ast.Sub: lambda: left - right,
                      ast.Mult: lambda: left * right, ast.Div: lambda: left / right,
                      ast.FloorDiv: lambda: left // right, ast.Pow: lambda: left ** right}
        return operations[type(node.op)]()
    raise ValueError(f"not a plain number: {ast.unparse(node)}")


def quantity_bytes(text):
    """A Kubernetes memory quantity ("128Mi", "1G", "134217728") in bytes."""
    text = str(text)
    for suffix, factor in QUANTITY_SUFFIXES.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def memory_limit_bytes(stage):
    """resources.limits.memory of the stage's Deployment, as rendered."""
    objects = render(stage_path(stage) / "k8s")
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return quantity_bytes(container["resources"]["limits"]["memory"])


def own_memory_cgroup():
    """This process's cgroup in the v1 memory hierarchy, or None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return MEMORY_CGROUPS / path.lstrip("/")
    return None


def raise_open_file_limit():
    """Attacks hold thousands of sockets: take the hard limit as our soft one."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class MemoryCgroup:
    """A child of our own memory cgroup (so whatever already accounts for us
    still accounts for it), limited to `limit` bytes, swap included."""

    _names = itertools.count()

    def __init__(self, limit):
        parent = own_memory_cgroup()
        self.path = parent / f"echo-attack-{os.getpid()}-{next(self._names)}"
        self.path.mkdir()
        self._write("memory.limit_in_bytes", limit)
        if (self.path / "memory.memsw.limit_in_bytes").exists():
            self._write("memory.memsw.limit_in_bytes", limit)  # no escape into swap

    @staticmethod
    def usable():
        parent = own_memory_cgroup()
        return parent is not None and (parent / "memory.limit_in_bytes").exists() and os.access(parent, os.W_OK)

    def _write(self, name, value):
        (self.path / name).write_text(str(value))

    def _read(self, name):
        return (self.path / name).read_text()

    @property
    def procs(self):
        return self.path / "cgroup.procs"

    def peak_bytes(self):
        return int(self._read("memory.max_usage_in_bytes"))

    def usage_bytes(self):
        return int(self._read("memory.usage_in_bytes"))

    def oom_kills(self):
        """The kernel's OOM kills in this cgroup (0 on kernels that do not count)."""
        fields = dict(line.split() for line in self._read("memory.oom_control").splitlines())
        return int(fields.get("oom_kill", 0))

    def remove(self):
        """Only once its processes are gone; the charges move to the parent."""
        try:
            self.path.rmdir()
        except FileNotFoundError:
            pass


class ContainedServer:
    """One stage's echo_server.py on loopback, in a MemoryCgroup when this
    machine allows one. `open_files` sets the RLIMIT_NOFILE soft limit it
    starts with (the container runtime's), else it inherits ours."""

    def __init__(self, stage, env=None, open_files=None, workdir=None):
        self.stage = resolve(stage)
        self.limit = memory_limit_bytes(stage)
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.metrics_port = free_port() if self.stage >= "05" else None
        env = {"ECHO_BIND": self.endpoint, **(env or {})}
        if self.metrics_port:
            env.setdefault("METRICS_PORT", self.metrics_port)
        self.cgroup = MemoryCgroup(self.limit) if MemoryCgroup.usable() else None
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="echo-attack-"))
        launcher = [*JOIN_THEN_EXEC, str(self.cgroup.procs) if self.cgroup else "", str(open_files or "")]
        self.process = ServerProcess(stage_path(stage) / "echo_server.py", env,
                                     self.workdir / f"{self.stage}-{self.port}.log", launcher=launcher)
        self.env = self.process.env
        self.final_status = {}

    @property
    def pid(self):
        return self.process.popen.pid

    def start(self):
        self.process.start()
        self.process.wait_serving(self.endpoint)
        return self

    def running(self):
        return self.process.running()

    def status(self):
        """/proc/PID/status as a dict (kB figures as ints); the last one read
        once the process is gone."""
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return self.final_status
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        self.final_status = {k: int(v.split()[0]) if v.split() and v.split()[0].isdigit() else v.strip()
                             for k, v in fields.items()}
        return self.final_status

    def rss_bytes(self):
        return self.status().get("VmRSS", 0) * 1024

    def threads(self):
        return self.status().get("Threads", 0)

    def open_files(self):
        """Its file descriptors now (0 once it is gone)."""
        try:
            return len(os.listdir(f"/proc/{self.pid}/fd"))
        except OSError:
            return 0

    def vm_hwm_bytes(self):
        """Its peak resident set (VmHWM): as of the last status() read while it ran."""
        return self.status().get("VmHWM", 0) * 1024

    def peak_bytes(self):
        """The most memory it ever held, as the limit counts it: the cgroup's
        high-water mark (kept after the process is gone), or running free its
        VmHWM. The two differ: VmHWM also counts the interpreter's and
        libraries' file pages, which were read (and charged) before the cgroup
        existed; a container would be charged those too, once."""
        if self.cgroup is None:
            return self.vm_hwm_bytes()
        if self.cgroup.path.exists():
            self._cgroup_peak = self.cgroup.peak_bytes()
        return self._cgroup_peak

    _cgroup_peak = 0

    def oom_killed(self):
        """Killed by the kernel for memory: counted by the cgroup, or a
        SIGKILL we did not send."""
        if self.cgroup and self.cgroup.path.exists():
            self._cgroup_oom_kills = self.cgroup.oom_kills()
        if self._cgroup_oom_kills:
            return True
        return not self.running() and self.process.exit_code() == -signal.SIGKILL and not self._killed

    _killed = False
    _cgroup_oom_kills = 0

    def output(self):
        return self.process.output()

    def send_signal(self, signum):
        self.process.signal(signum)

    def wait_exit(self, timeout):
        return self.process.wait(timeout)

    def exit_code(self):
        return self.process.exit_code()

    def stop(self):
        self.status()  # its VmHWM, while it still runs
        self._killed = self.running()
        self.process.kill()
        self.peak_bytes(), self.oom_killed()  # keep the last figures: the cgroup goes
        if self.cgroup:
            self.cgroup.remove()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":  # a quick look: python -m bench.memory_limit 01
    with ContainedServer(sys.argv[1] if len(sys.argv) > 1 else "01") as server:
        print(server.stage, "limit", server.limit, "cgroup", server.cgroup and server.cgroup.path,
              "rss", server.rss_bytes(), "peak", server.peak_bytes())
