"""What every backend offers the scenarios: one interface, two implementations."""

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field


@dataclass
class PodStatus:
    name: str
    address: str          # the ZeroMQ endpoint of the pod
    ready: bool
    terminating: bool
    restarts: int
    metrics_url: str | None = None


@dataclass
class PodTermination:
    """One pod's deletion, as seen by the backend (monotonic clock)."""

    pod: str
    deleted_at: float | None          # the deletion was seen (None: it was not, the pod was just gone)
    gone_at: float | None = None      # the pod was gone (None: still terminating)
    exit_code: int | None = None      # its container's, as a runtime reports it: 137 = SIGKILLed

    @property
    def sigkilled(self):
        return self.exit_code == 128 + 9


@dataclass
class ContainerRun:
    """One run of a pod's container (a restart starts the next), on the
    backend's clock (time.monotonic() of the process that drives it)."""

    started_at: float
    ended_at: float | None = None     # None: still running
    reason: str | None = None         # as Kubernetes says: Completed, Error, OOMKilled
    restart_count: int = 0            # the container's restartCount while this run went


@dataclass
class PodHistory:
    """What a pod did, for telling why a request sent to it was lost."""

    name: str
    address: str                      # its ZeroMQ endpoint
    created_at: float
    deleted_at: float | None = None
    runs: list = field(default_factory=list)  # ContainerRun, oldest first

    def run_at(self, t):
        """The run that was going at `t`, else None (not started, or between runs)."""
        return next((r for r in self.runs if r.started_at <= t and (r.ended_at is None or t < r.ended_at)), None)

    def last_run_before(self, t):
        ended = [r for r in self.runs if r.ended_at is not None and r.ended_at <= t]
        return ended[-1] if ended else None

    @property
    def oom_kills(self):
        return sum(r.reason == "OOMKilled" for r in self.runs)


class Backend(ABC):
    """A stage's Deployment on some cluster. `feed` is its EndpointFeed."""

    name = "backend"
    feed = None

    @abstractmethod
    def deploy(self, stage, env=None, init_process=False, timeout=60):
        """Apply the stage's manifests (env added to the container), wait for
        the rollout and for the feed to list every replica; return how long
        that took in seconds. `init_process`: Python does not run as PID 1
        (as under tini), so SIGTERM's default action kills it."""

    @abstractmethod
    def rollout_restart(self, env=None):
        """Replace every pod with a new revision (optionally with more env)."""

    @abstractmethod
    def scale(self, replicas):
        ...

    @abstractmethod
    def delete_pod(self, name):
        ...

    @abstractmethod
    def rollout_complete(self):
        """Every pod runs the current template, is ready, and there are `replicas`."""

    @abstractmethod
    def pods(self):
        """PodStatus of every pod, terminating ones included."""

    @abstractmethod
    def terminations(self):
        """A PodTermination for every pod deleted since deploy()."""

    @abstractmethod
    def pod_history(self):
        """A PodHistory for every pod since deploy(), gone ones included."""

    def memory_limits_held(self):
        """None if each container is held to its memory limit, as a node
        holds it; else why not, in a few words."""
        return None

    @abstractmethod
    def logs(self, pod_name, previous=False):
        """`kubectl logs`: the current container's output (the last one's
        while the pod waits to restart it); `previous`: the container that
        ended before it. LookupError if there is no such container."""

    @abstractmethod
    def start_load(self, spec):
        """Start a scenario's load (a LoadSpec) from where the pods can be
        reached; return a handle with elapsed(), finished(), stop(), `fault`
        (a FaultSent once sent) and result() (a LoadOutcome)."""

    @abstractmethod
    def close(self):
        ...

    def wait_rollout(self, timeout):
        """Seconds until the rollout completed; TimeoutError after `timeout`."""
        started = time.monotonic()
        while not self.rollout_complete():
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"rollout not complete after {timeout} s: {self.pods()}")
            time.sleep(0.05)  # a bounded poll of the cluster's state
        return time.monotonic() - started

    def wait_endpoints(self, count, timeout):
        if not self.feed.wait_until(lambda endpoints: len(endpoints) == count, timeout):
            raise TimeoutError(f"the feed did not list {count} endpoints within {timeout} s")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
