"""Load that runs while a scenario acts: in this process (local backend), or
in the cluster as a Job (kube backend, where pod IPs are only reachable from
inside). Both give the scenario the same handle."""

import threading
import time

from .loadgen import LoadGenerator


class LocalLoad:
    """The load generator on a thread of this process, following `feed`."""

    def __init__(self, feed, rate, timeout_s, max_s):
        self._stop = threading.Event()
        self._result = None
        self._error = None
        generator = LoadGenerator(feed, rate=rate, timeout_s=timeout_s)
        self.started = time.monotonic()
        self._thread = threading.Thread(target=self._run, args=(generator, max_s), name="load", daemon=True)
        self._thread.start()

    def _run(self, generator, max_s):
        try:
            self._result = generator.run(max_s, during=lambda t: self._stop.is_set())
        except BaseException as error:  # handed to the scenario's thread by result()
            self._error = error

    def elapsed(self):
        return time.monotonic() - self.started

    def finished(self):
        return not self._thread.is_alive()

    def stop(self):
        """Stop sending; replies still owed are waited for."""
        self._stop.set()

    def result(self):
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result


LOADGEN_IMAGE = "cloudnative-echo:loadgen"
STARTED = '{"started": true}'  # the loadgen's first log line: its clock starts now


def loadgen_job(name, namespace, service, rate, timeout_s, max_s):
    """The Job that runs `python -m workshop loadgen` in the cluster, as the
    loadgen ServiceAccount (k8s/loadgen-rbac.yaml), restricted-profile pod."""
    return {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": namespace,
                     "labels": {"app.kubernetes.io/name": "loadgen", "app.kubernetes.io/part-of": "cloudnative-echo"}},
        "spec": {"backoffLimit": 0, "ttlSecondsAfterFinished": 600, "template": {
            "metadata": {"labels": {"app.kubernetes.io/name": "loadgen"}},
            "spec": {
                "serviceAccountName": "loadgen", "restartPolicy": "Never",
                "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                    "seccompProfile": {"type": "RuntimeDefault"}},
                "containers": [{
                    "name": "loadgen", "image": LOADGEN_IMAGE, "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-m", "workshop", "loadgen", "--namespace", namespace,
                                "--service", service, "--rate", str(rate), "--timeout", str(timeout_s),
                                "--seconds", str(max_s)],
                    "resources": {"requests": {"cpu": "200m", "memory": "64Mi"},
                                  "limits": {"cpu": "1", "memory": "256Mi"}},
                    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                        "capabilities": {"drop": ["ALL"]}},
                }],
            }}},
    }


class JobLoad:
    """The load generator as a Job in the cluster, where the pod IPs are.

    Its clock starts when its log says STARTED (so the scenario's timing is
    off by one log poll, ~0.2 s). It runs its full `max_s`: stop() cannot
    reach into the cluster early. The result is read back from its log.
    """

    POLL_S = 0.2

    def __init__(self, api_client, namespace, service, rate, timeout_s, max_s, name):
        from kubernetes import client
        self.core = client.CoreV1Api(api_client)
        self.batch = client.BatchV1Api(api_client)
        self.namespace, self.name, self.max_s = namespace, name, max_s
        self.batch.create_namespaced_job(namespace, loadgen_job(name, namespace, service, rate, timeout_s, max_s))
        self.started = None
        self._next_look = 0.0
        self._done = False

    def _pod_name(self):
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=f"job-name={self.name}").items
        return pods[0].metadata.name if pods else None

    def log_lines(self):
        pod = self._pod_name()
        if pod is None:
            return []
        try:
            return self.core.read_namespaced_pod_log(pod, self.namespace).splitlines()
        except Exception:  # the container has not started yet
            return []

    def _look(self):
        if time.monotonic() < self._next_look:
            return
        self._next_look = time.monotonic() + self.POLL_S
        if self.started is None and STARTED in self.log_lines():
            self.started = time.monotonic()
        status = self.batch.read_namespaced_job_status(self.name, self.namespace).status
        self._done = bool(status.succeeded or status.failed)

    def elapsed(self):
        self._look()
        return 0.0 if self.started is None else time.monotonic() - self.started

    def finished(self):
        self._look()
        return self._done

    def stop(self):
        """Nothing to do: the Job stops on its own after max_s."""

    def result(self, timeout_s=None):
        from .loadgen import from_json_lines
        deadline = time.monotonic() + (timeout_s or self.max_s + 120)
        while not self.finished():
            if time.monotonic() > deadline:
                raise TimeoutError(f"load generator Job {self.name} did not finish")
            time.sleep(self.POLL_S)
        result = from_json_lines(self.log_lines())
        if result is None:
            raise RuntimeError(f"load generator Job {self.name} left no result:\n" + "\n".join(self.log_lines()[-20:]))
        return result
