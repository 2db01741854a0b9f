"""A stage's server as a real process held to its Deployment's memory limit,
as the kubelet would hold it: inside a memory cgroup (workshop/backends/
cgroups.py) with resources.limits.memory, so an attack that would get a
replica OOM-killed gets this process OOM-killed too. Without a writable
memory cgroup, the process runs free and its peak RSS (VmHWM) is compared
with the limit instead.

    with ContainedServer("01") as server:
        ...attack server.endpoint...
        server.peak_bytes(), server.oom_killed(), server.running()

WORKSHOP_STAGES_DIR (workshop/stages.py) points it at another copy of
stages/ (say a git worktree of an older commit), to show that the attacks
take the old code down.
"""

import ast
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from workshop.backends.cgroups import MemoryCgroup, own_cgroups
from workshop.backends.cgroups import launcher as cgroup_launcher
from workshop.manifests import quantity_bytes, render
from workshop.process import ServerProcess, free_port
from workshop.stages import STAGES_DIR, resolve


def stage_path(stage):
    return STAGES_DIR / resolve(stage)


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


def memory_limit_bytes(stage):
    """resources.limits.memory of the stage's Deployment, as rendered."""
    objects = render(stage_path(stage) / "k8s")
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return quantity_bytes(container["resources"]["limits"]["memory"])


def raise_open_file_limit():
    """Attacks hold thousands of sockets: take the hard limit as our soft one."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class CpuCgroup:
    """A cgroup (v1 cpu controller) that holds its processes to `cores` of
    CPU, as the kubelet holds a container to resources.limits.cpu: a CFS
    quota per 100 ms period."""

    PERIOD_US = 100_000
    ROOT = Path("/sys/fs/cgroup/cpu")

    def __init__(self, cores):
        own = own_cgroups().get("cpu")
        if own is None or not (self.ROOT / "cpu.cfs_quota_us").exists():
            raise OSError("no cgroup v1 cpu controller here")
        self.path = self.ROOT / own.lstrip("/") / f"echo-cpu-{os.getpid()}-{id(self)}"
        self.path.mkdir()
        (self.path / "cpu.cfs_period_us").write_text(str(self.PERIOD_US))
        (self.path / "cpu.cfs_quota_us").write_text(str(int(cores * self.PERIOD_US)))

    def add(self, pid):
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled_s(self):
        stats = dict(line.split() for line in (self.path / "cpu.stat").read_text().splitlines())
        return int(stats.get("throttled_time", 0)) / 1e9

    def remove(self):
        try:
            self.path.rmdir()
        except OSError:
            pass


class ContainedServer:
    """One stage's echo_server.py on loopback, in a MemoryCgroup when this
    machine allows one. `open_files` sets the RLIMIT_NOFILE soft limit it
    starts with (the container runtime's), else it inherits ours;
    `cpu_cores`, a CPU limit (the Deployment's is 500m), where a cpu cgroup
    can be made."""

    def __init__(self, stage, env=None, open_files=None, workdir=None, cpu_cores=None):
        self.stage = resolve(stage)
        self.limit = memory_limit_bytes(stage)
        self.port = free_port()
        self.endpoint = f"tcp://127.0.0.1:{self.port}"
        self.metrics_port = free_port() if self.stage >= "05" else None
        env = {"ECHO_BIND": self.endpoint, **(env or {})}
        if self.metrics_port:
            env.setdefault("METRICS_PORT", self.metrics_port)
        self.cgroup = MemoryCgroup(self.limit) if MemoryCgroup.why_not() is None else None
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="echo-attack-"))
        launcher = cgroup_launcher(self.cgroup, open_files)
        self.process = ServerProcess(stage_path(stage) / "echo_server.py", env,
                                     self.workdir / f"{self.stage}-{self.port}.log", launcher=launcher)
        self.env = self.process.env
        self.final_status = {}
        self.cpu = CpuCgroup(cpu_cores) if cpu_cores else None

    @property
    def pid(self):
        return self.process.popen.pid

    def start(self):
        self.process.start()
        if self.cpu:
            self.cpu.add(self.pid)
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

    def cpu_seconds(self):
        """User and system CPU it has used so far (0 once it is gone)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

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
        if self.cpu:
            self.cpu.remove()
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
