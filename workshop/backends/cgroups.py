"""A process held to a memory limit the way a container is: in a cgroup of
its own with the pod's resources.limits.memory, so what would get a replica
OOM-killed on a node gets this process OOM-killed too (the kernel's OOM
killer, acting on the cgroup's limit, as for a container).

Both hierarchies:
- v1: a child of our own cgroup in the memory controller
  (/sys/fs/cgroup/memory/...): memory.limit_in_bytes (and memsw: no escape
  into swap), memory.max_usage_in_bytes, memory.oom_control's oom_kill;
- v2: a child of our own cgroup in the unified hierarchy, once "memory" is
  in the parent's cgroup.subtree_control: memory.max, memory.swap.max,
  memory.peak, memory.events' oom_kill. v2 lets a cgroup that holds
  processes delegate no controller, so that may be refused: `why_not()`
  says so.

`MemoryCgroup.why_not()` is None where a limit can be held here, else the
reason in a few words (not root, no memory controller, ...), for the
scoreboard to say why a cell has no figure.
"""

import os
import secrets
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")

# Put before a Python program's own arguments (a ServerProcess launcher):
# join the cgroup, optionally set the open-file soft limit a container runtime
# gives, ignore SIGTERM as PID 1 does (see kubelet.AS_PID_1), then exec the
# program in the same process. Joining before exec means every page the
# program ever touches is charged to the cgroup.
JOIN_THEN_EXEC = ["-c", "import os, resource, signal, sys\n"
                        "procs, nofile, pid_1, *command = sys.argv[1:]\n"
                        "if procs: open(procs, 'w').write(str(os.getpid()))\n"
                        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
                        "if nofile: resource.setrlimit(resource.RLIMIT_NOFILE, (int(nofile), hard))\n"
                        "if pid_1: signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                        "os.execv(sys.executable, [sys.executable, *command])\n"]


def launcher(cgroup=None, open_files=None, as_pid_1=False):
    """The arguments that start a program in `cgroup` (None: where we are)."""
    return [*JOIN_THEN_EXEC, str(cgroup.procs) if cgroup else "", str(open_files or ""), "1" if as_pid_1 else ""]


def own_cgroups(proc_cgroup=Path("/proc/self/cgroup")):
    """{"memory": v1 path, "": v2 path} of this process, as /proc says."""
    found = {}
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            found[controller] = path
    return found


def parent_cgroup(root=CGROUP_ROOT, proc_cgroup=Path("/proc/self/cgroup")):
    """(version, the directory our children go in), or (None, why not)."""
    own = own_cgroups(proc_cgroup)
    if "memory" in own and (root / "memory").is_dir():
        return 1, root / "memory" / own["memory"].lstrip("/")
    if "" in own and (root / "cgroup.controllers").is_file():
        parent = root / own[""].lstrip("/")
        if "memory" not in (parent / "cgroup.controllers").read_text().split():
            return None, "cgroup v2 without the memory controller here"
        return 2, parent
    return None, "no memory cgroup here"


class MemoryCgroup:
    """A child of our own cgroup (whatever accounts for us still accounts for
    it), limited to `limit` bytes, swap included."""

    def __init__(self, limit, root=CGROUP_ROOT, proc_cgroup=Path("/proc/self/cgroup")):
        self.version, parent = parent_cgroup(root, proc_cgroup)
        if self.version is None:
            raise OSError(parent)
        if self.version == 2:
            self._delegate_memory(parent)
        self.path = parent / f"echo-{secrets.token_hex(6)}"  # never one that a run before left
        self.path.mkdir()
        if self.version == 1:
            self._write("memory.limit_in_bytes", limit)
            if (self.path / "memory.memsw.limit_in_bytes").exists():
                self._write("memory.memsw.limit_in_bytes", limit)  # no escape into swap
        else:
            self._write("memory.max", limit)
            if (self.path / "memory.swap.max").exists():
                self._write("memory.swap.max", 0)

    @staticmethod
    def _delegate_memory(parent):
        control = parent / "cgroup.subtree_control"
        if "memory" not in control.read_text().split():
            control.write_text("+memory")  # EBUSY if the parent holds processes: v2's rule

    @classmethod
    def why_not(cls, root=CGROUP_ROOT, proc_cgroup=Path("/proc/self/cgroup")):
        """None if a memory limit can be held here, else why not."""
        if os.geteuid() != 0:
            return "not root: no memory cgroup"
        version, parent = parent_cgroup(root, proc_cgroup)
        if version is None:
            return parent
        if not os.access(parent, os.W_OK):
            return f"cgroup v{version}: {parent} is not writable"
        if version == 2:
            try:
                cls._delegate_memory(parent)
            except OSError as error:
                return f"cgroup v2: cannot delegate the memory controller ({error.strerror})"
        return None

    def _write(self, name, value):
        (self.path / name).write_text(str(value))

    def _read(self, name):
        return (self.path / name).read_text()

    @property
    def procs(self):
        return self.path / "cgroup.procs"

    def peak_bytes(self):
        return int(self._read("memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"))

    def oom_kills(self):
        """The kernel's OOM kills in this cgroup (0 on kernels that do not count)."""
        text = self._read("memory.oom_control" if self.version == 1 else "memory.events")
        return int(dict(line.split() for line in text.splitlines()).get("oom_kill", 0))

    def remove(self):
        """Once its processes are gone (the charges move to the parent); True
        if it is gone, False while a process is still in it (EBUSY: an exec
        probe that has not ended yet, say): try again later."""
        try:
            self.path.rmdir()
        except FileNotFoundError:
            pass
        except OSError:
            return False
        return True
