"""python -m workshop doctor: is this cluster ready for the notebooks?

Each check prints `ok   <what>`, or `FAIL <what>: <why>` and the one command
that fixes it; a check that needs one that failed is skipped, saying so.

    ok   kubeconfig context: minikube
    FAIL the images on the node: missing cloudnative-echo:loadgen
      fix: .venv/bin/python -m workshop images --context minikube

The last check deploys the last stage, the one that exercises the most
(probes, preStop, metrics), replacing whatever stage the `echo` Deployment
ran, and echoes through it from a Job inside the cluster.

A context that is not a minikube profile (kind, a cloud cluster) passes too:
its images cannot be listed from here, so the echo check decides whether
they are there. Each fix names the interpreter running the doctor and the
profile it examined.
"""

import os
import secrets
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass

from kubernetes import config
from kubernetes.client.rest import ApiException

from .backends.cluster_job import ClusterJob, has_record, records
from .backends.json_api import KubeApi
from .backends.kube import KubeBackend
from .backends.minikube import current_context, has_image, images_on_node, kubeconfig_file, profiles, workshop_images
from .stages import ROOT, all_stages

NAMESPACE = "cloudnative-echo"
PSS_LABEL = "pod-security.kubernetes.io/enforce"
APPLY = "kubectl apply -k k8s"
PROMETHEUS_ROLLOUT_S = 60   # a fresh Prometheus pulls its image and starts: wait this long for it
READ_VERBS = {"get", "list", "watch"}


@dataclass
class Patient:
    """The cluster under examination, and what the checks learn about it."""

    context: str | None = None
    api_client: object = None
    explicit_context: bool = False
    namespace: str = NAMESPACE
    deploy_timeout_s: float = 180
    job_timeout_s: float = 120
    prometheus_wait_s: float = PROMETHEUS_ROLLOUT_S
    run: object = subprocess.run                 # how minikube is run
    known_profiles: dict | None = None           # minikube's profiles, asked once

    def is_profile(self):
        if self.known_profiles is None:
            try:
                self.known_profiles = profiles(self.run)
            except Exception:  # minikube did not answer: not a profile we can use
                self.known_profiles = {}
        return self.context in self.known_profiles

    @property
    def api(self):
        """The API, every answer as its JSON (a KubeApi)."""
        if getattr(self, "_api", None) is None or self._api.api_client is not self.api_client:
            self._api = KubeApi(self.api_client)
        return self._api


def interpreter():
    """The Python running this, as a user would type it: relative to the
    repository when inside it (.venv/bin/python), else its full path."""
    path = sys.executable
    try:
        relative = os.path.relpath(path, ROOT)
    except ValueError:  # another drive
        return path
    return path if relative.startswith("..") else relative


# -- the checks: each returns (ok, detail, fix) --

def check_context(patient):
    if patient.api_client is None:
        try:
            patient.context = patient.context or current_context()
            if patient.context is None:
                raise ValueError("the kubeconfig has no current context")
            patient.api_client = config.new_client_from_config(config_file=kubeconfig_file(),
                                                               context=patient.context)
        except Exception as error:  # no kubeconfig, no such context: minikube start writes one
            return False, f"no usable kubeconfig context ({error})", start_command(patient)
    return True, patient.context, None


def check_api_server(patient):
    try:
        version = patient.api.get("/version", timeout_s=5)
    except Exception as error:
        return False, f"nobody answers ({describe(error)})", start_command(patient)
    return True, version.get("gitVersion"), None


def check_profile(patient):
    if patient.is_profile():
        return True, None, None
    return True, (f"{patient.context!r} is not: the workshop cannot build or list its images there "
                  "(build them with each chapter's command); the echo check below tells whether they are there"), None


def check_namespace(patient):
    found = patient.api.get_or_none(f"/api/v1/namespaces/{patient.namespace}")
    if found is None:
        return False, "it does not exist", APPLY
    labels = found["metadata"].get("labels") or {}
    if labels.get(PSS_LABEL) != "restricted":
        return False, f"it lacks the label {PSS_LABEL}=restricted", APPLY
    return True, None, None


def check_rbac(patient):
    ns = patient.namespace
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}"
    if patient.api.get_or_none(f"/api/v1/namespaces/{ns}/serviceaccounts/loadgen") is None:
        return False, "ServiceAccount loadgen is missing", APPLY
    role = patient.api.get_or_none(f"{rbac}/roles/loadgen")
    if role is None:
        return False, "Role loadgen is missing", APPLY
    for group, resource in (("discovery.k8s.io", "endpointslices"), ("", "pods")):
        if not any(grants(rule, group, resource) for rule in role.get("rules") or []):
            return False, f"Role loadgen does not grant get, list and watch on {resource}", APPLY
    binding = patient.api.get_or_none(f"{rbac}/rolebindings/loadgen")
    if binding is None:
        return False, "RoleBinding loadgen is missing", APPLY
    subjects = {(s.get("kind"), s.get("name"), s.get("namespace") or ns) for s in binding.get("subjects") or []}
    role_ref = binding.get("roleRef") or {}
    if (role_ref.get("kind"), role_ref.get("name")) != ("Role", "loadgen") or \
            ("ServiceAccount", "loadgen", ns) not in subjects:
        return False, "RoleBinding loadgen does not bind Role loadgen to ServiceAccount loadgen", APPLY
    return True, None, None


def check_images(patient):
    wanted = [image for _, image in workshop_images(all_stages())]
    if not patient.is_profile():
        return True, "not listed (not a minikube profile): the echo check decides", None
    listed = images_on_node(patient.context, run=patient.run)
    missing = [image for image in wanted if not has_image(image, listed)]
    if missing:
        return False, f"missing {', '.join(missing)}", f"{interpreter()} -m workshop images --context {patient.context}"
    return True, f"{len(wanted)} images", None


def check_prometheus(patient):
    """Prometheus available, waiting (bounded) for a rollout still under way."""
    path = f"/apis/apps/v1/namespaces/{patient.namespace}/deployments/prometheus"
    deadline = time.monotonic() + patient.prometheus_wait_s
    while True:
        deployment = patient.api.get_or_none(path)
        if deployment is None:
            return False, "Deployment prometheus is missing", APPLY
        if (deployment.get("status") or {}).get("availableReplicas", 0) >= 1:
            return True, None, None
        if time.monotonic() > deadline:
            return False, f"Deployment prometheus has no available replica after {patient.prometheus_wait_s:.0f} s", \
                f"kubectl -n {patient.namespace} describe deployment/prometheus"
        time.sleep(1)  # its rollout is still under way


def check_echo(patient):
    """The last stage deployed, and one echo from inside the cluster through its Service."""
    stage = all_stages()[-1]
    with KubeBackend(api_client=patient.api_client) as backend:
        try:
            backend.deploy(stage, timeout=patient.deploy_timeout_s)
        except TimeoutError as error:
            return False, f"stage {stage} did not come up: {error}", \
                f"kubectl -n {patient.namespace} get events --sort-by=.lastTimestamp"
        service = backend.spec.service
    name = f"doctor-echo-{secrets.token_hex(3)}"
    job = ClusterJob(patient.api, patient.namespace, name,
                     ["echo", "--namespace", patient.namespace, "--service", service], finished=has_record("echo"))
    why_not = f"kubectl -n {patient.namespace} logs job/{name}"
    try:
        job.wait(patient.job_timeout_s)
    except TimeoutError as error:
        return False, f"{error}; its last log lines:\n{last_lines(job)}", why_not
    echoes = [record["echo"] for record in records(job.lines) if "echo" in record]
    if not (job.succeeded and echoes):
        outcome = "succeeded without an echo" if job.succeeded else "failed"
        return False, f"Job {name} {outcome}; its last log lines:\n{last_lines(job)}", why_not
    job.delete()  # kept only when it failed, for its log
    return True, f"stage {stage} answered through Service {service}, {echoes[-1]['endpoints']} endpoints", None


@dataclass
class Check:
    name: str                # what `needs` refers to
    what: str                # what the line says
    function: object
    fix: str                 # if the check itself raised
    needs: tuple = ()        # the checks that must have passed first


CHECKS = [
    Check("context", "kubeconfig context", check_context, "minikube start"),
    Check("api", "the API server answers", check_api_server, "minikube start", ("context",)),
    Check("profile", "the context is a minikube profile", check_profile, "minikube profile list", ("context",)),
    Check("namespace", f"namespace {NAMESPACE}, Pod Security restricted", check_namespace, APPLY, ("api",)),
    Check("rbac", "RBAC for the load generator (ServiceAccount, Role, RoleBinding loadgen)", check_rbac,
          APPLY, ("namespace",)),
    Check("images", "the images on the node", check_images, f"{interpreter()} -m workshop images", ("api", "profile")),
    Check("prometheus", "Prometheus is available", check_prometheus, APPLY, ("namespace",)),
    Check("echo", "an echo through an in-cluster Job", check_echo, f"kubectl -n {NAMESPACE} get events",
          ("rbac", "images")),
]


def run(context=None, api_client=None, out=None, checks=CHECKS, **options):
    """Run the checks in order, printing a line each; 0 if all passed, else 1."""
    out = out or (lambda text: print(text, flush=True))
    patient = Patient(context=context, api_client=api_client, explicit_context=context is not None, **options)
    whats = {check.name: check.what for check in checks}
    passed = set()
    for check in checks:
        failed_needs = [whats[need] for need in check.needs if need not in passed]
        if failed_needs:
            out(f"skip {check.what}: needs {' and '.join(failed_needs)}")
            continue
        try:
            ok, detail, fix = check.function(patient)
        except Exception as error:  # an unexpected answer is a failed check, not a crash
            ok, detail, fix = False, describe(error), check.fix
        if ok:
            passed.add(check.name)
            out(f"ok   {check.what}" + (f": {detail}" if detail else ""))
        else:
            out(f"FAIL {check.what}: {detail}\n  fix: {fix}")
    return 0 if len(passed) == len(checks) else 1


# -- helpers --

def grants(rule, group, resource):
    """True if an RBAC rule (the API's JSON) allows reading `resource` of API group `group`."""
    def has(values, value):
        return value in (values or []) or "*" in (values or [])
    verbs = rule.get("verbs") or []
    return has(rule.get("apiGroups"), group) and has(rule.get("resources"), resource) and (
        "*" in verbs or READ_VERBS <= set(verbs))


def describe(error):
    """An error in one line: the API's status and reason, or the message's first line."""
    if isinstance(error, ApiException):
        return f"the API answered {error.status} {error.reason}"
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


def start_command(patient):
    """`minikube start` for the profile examined (minikube names a profile's context after it)."""
    if patient.context and patient.is_profile():
        return f"minikube start -p {patient.context}"
    return "minikube start"


def last_lines(job, count=10):
    return textwrap.indent(job.last_lines(count) or "(no log)", "    ")
