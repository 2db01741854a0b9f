"""A kube run in a namespace of its own (the demo's children), against the
test cluster (tests/kube_cluster.py, tests/fake_cluster.py):

- the test cluster's Namespaces answer as a real API server's do;
- a run's namespace has the Pod Security label of k8s/namespace.yaml, the
  load generator's RBAC and the NetworkPolicies, not Prometheus; the stage,
  its Jobs and `StageSpec.namespace` all go there;
- two runs at once never see each other's pods, slices or Jobs;
- after close the namespace is gone or going, close does not wait for it,
  and an interrupted run (SIGTERM, Ctrl-C) deletes it too.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fake_cluster import FakeCluster
from kube_cluster import NS, ApiServer, api_client, contents
from support import ROOT, wait_for
from workshop.backends import kube
from workshop.backends.json_api import KubeApi
from workshop.backends.kube import KubeBackend
from workshop.backends.run_namespace import PREFIX, RUN_LABEL
from workshop.manifests import render
from workshop.scenarios import run_scenario

pytestmark = pytest.mark.kmock(cls=ApiServer)
PSA = "pod-security.kubernetes.io/enforce"


async def answer(kmock, method, path, **body):
    response = await kmock.request(method, path, json=body or None)
    return response.status, await response.json()


def phase(kmock, namespace):
    """'Active', 'Terminating', or None once it is gone."""
    found = kmock.namespaces.get(namespace)
    return found and found["status"]["phase"]


def ever(kmock, resource, namespace):
    """The names of every object of `resource` there ever was in `namespace`."""
    return {key[2] for key in list(kmock.objects.keys()) if key[0] == resource and key[1] == namespace}


# -- the test cluster's Namespaces, as a real API server's --

async def test_a_namespace_refuses_new_content_while_it_is_deleted_and_is_gone_after(kmock):
    kmock.resources.load_bundled()
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}}
    status, created = await answer(kmock, "POST", "/api/v1/namespaces", metadata={"name": "n"})
    assert status == 201 and created["status"]["phase"] == "Active" and created["spec"]["finalizers"] == ["kubernetes"]
    assert (await answer(kmock, "POST", "/api/v1/namespaces", metadata={"name": "n"}))[0] == 409  # AlreadyExists
    assert (await answer(kmock, "POST", "/api/v1/namespaces/n/pods", **pod))[0] in (200, 201)  # kmock: 200
    status, deleting = await answer(kmock, "DELETE", "/api/v1/namespaces/n")
    assert status == 200 and deleting["status"]["phase"] == "Terminating" and deleting["metadata"]["deletionTimestamp"]
    assert (await answer(kmock, "DELETE", "/api/v1/namespaces/n"))[0] == 409  # it is already being emptied
    status, refused = await answer(kmock, "POST", "/api/v1/namespaces/n/pods", **{**pod, "metadata": {"name": "q"}})
    assert status == 403 and refused["details"]["causes"][0]["reason"] == "NamespaceTerminating"
    assert (await answer(kmock, "POST", "/api/v1/namespaces", metadata={"name": "n"}))[0] == 409  # still there
    cluster = FakeCluster(kmock)  # the namespace controller: the pod goes, then the namespace
    for _ in range(3):
        await cluster.step()
    assert phase(kmock, "n") is None and contents(kmock, "n") == []
    assert (await answer(kmock, "GET", "/api/v1/namespaces/n"))[0] == 404
    assert (await answer(kmock, "POST", "/api/v1/namespaces/n/pods", **pod))[0] == 404


# -- what a run's namespace holds --

async def test_a_run_gets_a_namespace_of_its_own_with_what_a_run_needs_from_k8s(kmock):
    kmock.resources.load_bundled()
    backend = await asyncio.to_thread(KubeBackend, api_client=api_client(kmock), own_namespace=True)
    namespace = backend.namespace
    try:
        assert namespace.startswith(PREFIX) and phase(kmock, namespace) == "Active"
        labels = kmock.namespaces[namespace]["metadata"]["labels"]
        (shared,) = [o for o in render(ROOT / "k8s") if o["kind"] == "Namespace"]
        assert labels[PSA] == shared["metadata"]["labels"][PSA] == "restricted" and labels[RUN_LABEL] == "true"
        held = {(resource.plural, name) for resource, name in contents(kmock, namespace)}
        assert held == {("serviceaccounts", "loadgen"), ("roles", "loadgen"), ("rolebindings", "loadgen"),
                        ("networkpolicies", "default-deny-ingress"), ("networkpolicies", "echo")}  # no Prometheus
        binding = kmock.objects["rbac.authorization.k8s.io/v1/rolebindings", namespace, "loadgen"]
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "loadgen", "namespace": namespace}]
        assert contents(kmock, NS) == []
    finally:
        await asyncio.to_thread(backend.close)


async def test_the_notebooks_backend_stays_in_the_shared_namespace(kmock):
    kmock.resources.load_bundled()
    backend = await asyncio.to_thread(KubeBackend, api_client=api_client(kmock))
    await asyncio.to_thread(backend.close)
    assert backend.namespace == NS and kmock.namespaces == {} and kmock.namespace_requests == []


# -- two runs at once --

@pytest.mark.timeout(120)
async def test_two_runs_at_once_never_see_each_others_pods_slices_or_jobs(kmock):
    kmock.resources.load_bundled()
    cluster = FakeCluster(kmock)
    controllers = asyncio.create_task(cluster.run())
    runs = {"a": ("01", "crash"), "b": ("04", "pod-kill")}
    backends, results, spans = {}, {}, {}

    def run(who):
        client = api_client(kmock)
        client.user_agent = f"run-{who}"  # tells its requests apart in kmock's log
        backends[who] = KubeBackend(api_client=client, own_namespace=True)
        with backends[who] as backend:
            started = time.monotonic()
            results[who] = run_scenario(backend, *runs[who])
            spans[who] = (started, time.monotonic())
            return backend.spec.namespace, {h.name for h in backend.pod_history()}, \
                {t.pod for t in backend.terminations()}
    try:
        seen = dict(zip(runs, await asyncio.gather(*(asyncio.to_thread(run, who) for who in runs))))
    finally:
        if controllers.done():
            controllers.result()  # the fake cluster failed: say why
        controllers.cancel()
    assert max(start for start, _ in spans.values()) < min(end for _, end in spans.values())  # at once
    namespaces = {who: backend.namespace for who, backend in backends.items()}
    assert len(set(namespaces.values())) == 2 and NS not in namespaces.values()
    for who, (spec_namespace, histories, terminations) in seen.items():
        other = namespaces["b" if who == "a" else "a"]
        assert spec_namespace == namespaces[who]
        assert results[who].sent == 2 and results[who].stage.startswith(runs[who][0])
        pods = ever(kmock, "v1/pods", namespaces[who])
        assert histories and histories | terminations <= pods
        assert ever(kmock, "batch/v1/jobs", namespaces[who]) and not ever(kmock, "batch/v1/jobs", NS)
        assert ever(kmock, "discovery.k8s.io/v1/endpointslices", namespaces[who])
        paths = [r.url.path for r in list(kmock) if r.headers.get("User-Agent") == f"run-{who}"]
        assert paths and all(f"/namespaces/{namespaces[who]}/" in path for path in paths), \
            sorted({path for path in paths if f"/namespaces/{namespaces[who]}/" not in path})
        assert not any(other in path for path in paths)
    for namespace in namespaces.values():
        assert phase(kmock, namespace) in ("Terminating", None)


# -- closing --

@pytest.mark.timeout(60)
async def test_closing_deletes_the_namespace_without_waiting_and_its_pods_without_grace(kmock):
    kmock.resources.load_bundled()
    cluster = FakeCluster(kmock, grace_s=30)  # pods that would hold their grace, as 01-03's do
    controllers = asyncio.create_task(cluster.run())
    backend = await asyncio.to_thread(KubeBackend, api_client=api_client(kmock), own_namespace=True)
    try:
        await asyncio.to_thread(backend.deploy, "01", None, False, 30)
        pods = {pod.name for pod in backend.pods()}
    finally:
        controllers.cancel()  # no namespace controller now: nothing finishes the deletion
    started = time.monotonic()
    await asyncio.to_thread(backend.close)
    assert time.monotonic() - started < 5
    assert phase(kmock, backend.namespace) == "Terminating"  # asked for, not waited for
    assert len(pods) == 3 and pods <= kmock.deleted_without_grace  # their CPU is free for the next run now
    await cluster.step()  # the ReplicaSet controller would replace them: a Terminating namespace refuses
    assert ever(kmock, "v1/pods", backend.namespace) == pods
    await asyncio.to_thread(backend.close)  # closing twice is harmless: the second DELETE's 409 is expected
    deletes = [r for r in kmock.namespace_requests if r[0] == "DELETE"]
    assert len(deletes) == 1 and deletes[0][2]["propagationPolicy"] == "Background"


async def test_an_interrupt_while_the_namespace_is_made_still_deletes_it(kmock, monkeypatch):
    kmock.resources.load_bundled()
    real_post, posts = KubeApi.post, []

    def post(api, path, body):
        posts.append(path)
        if len(posts) == 2:  # the namespace is made; its first piece is being created
            raise KeyboardInterrupt
        return real_post(api, path, body)
    monkeypatch.setattr(KubeApi, "post", post)

    def make():
        try:
            KubeBackend(api_client=api_client(kmock), own_namespace=True)
        except KeyboardInterrupt:
            return "interrupted"
    assert await asyncio.to_thread(make) == "interrupted"
    (namespace,) = kmock.namespaces
    assert phase(kmock, namespace) == "Terminating"


async def test_a_name_already_taken_is_someone_elses_and_left_alone(kmock, monkeypatch):
    kmock.resources.load_bundled()
    await answer(kmock, "POST", "/api/v1/namespaces", metadata={"name": f"{PREFIX}taken"})
    names = iter([f"{PREFIX}taken", f"{PREFIX}free"])
    monkeypatch.setattr(kube, "new_name", lambda: next(names))  # where KubeBackend looks it up
    backend = await asyncio.to_thread(KubeBackend, api_client=api_client(kmock), own_namespace=True)
    await asyncio.to_thread(backend.close)
    assert backend.namespace == f"{PREFIX}free" and phase(kmock, f"{PREFIX}free") == "Terminating"
    assert phase(kmock, f"{PREFIX}taken") == "Active"


def kubeconfig(tmp_path, kmock):
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
        "clusters": [{"name": "kmock", "cluster": {"server": str(kmock.url).rstrip("/")}}],
        "users": [{"name": "kmock", "user": {"token": "t"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock"}}]}))
    return path


@pytest.mark.timeout(90)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
async def test_an_interrupted_run_still_deletes_its_namespace(kmock, tmp_path, signum):
    """A demo child, as the demo starts it, interrupted during its load."""
    kmock.resources.load_bundled()
    cluster = FakeCluster(kmock)
    controllers = asyncio.create_task(cluster.run())
    request = {"stage": "01", "scenario": "hang", "backend": "kube",
               "backend_options": {"context": "kmock", "build_images": False, "own_namespace": True}}
    child = subprocess.Popen([sys.executable, "-m", "workshop.parallel_runs", json.dumps(request)], cwd=ROOT,
                             env={**os.environ, "KUBECONFIG": str(kubeconfig(tmp_path, kmock))},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        def loading():
            return [name for name in kmock.namespaces if ever(kmock, "batch/v1/jobs", name)]
        (namespace,) = await asyncio.to_thread(wait_for, loading, 30, 0.05, "the child's load Job")
        child.send_signal(signum)
        _, stderr = await asyncio.to_thread(child.communicate, timeout=30)
    finally:
        child.kill()
        if controllers.done():
            controllers.result()
        controllers.cancel()
    assert child.returncode == 130, stderr
    assert phase(kmock, namespace) in ("Terminating", None), stderr

