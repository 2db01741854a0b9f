"""python -m workshop doctor: is this cluster ready for the notebooks?

Each check prints `ok   <what>`, or `FAIL <what>: <why>` and the one command
that fixes it; a check that needs one that failed is skipped, saying so.

    ok   kubeconfig context: minikube
    FAIL the images on the node: missing cloudnative-echo:loadgen
      fix: python -m workshop images

The last check deploys stage 01 (replacing whatever stage the `echo`
Deployment ran) and echoes through it from a Job inside the cluster.
"""

import secrets
import subprocess
import textwrap
from dataclasses import dataclass

from kubernetes import config
from kubernetes.client.rest import ApiException

from .backends.cluster_job import ClusterJob, has_record, records
from .backends.json_api import KubeApi
from .backends.kube import KubeBackend
from .backends.minikube import current_context, has_image, images_on_node, is_profile, kubeconfig_file, workshop_images
from .stages import all_stages

NAMESPACE = "cloudnative-echo"
PSS_LABEL = "pod-security.kubernetes.io/enforce"
APPLY = "kubectl apply -k k8s"
USE_MINIKUBE = "kubectl config use-context minikube"
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
    run: object = subprocess.run                 # how minikube is run

    @property
    def api(self):
        """The API, every answer as its JSON (a KubeApi)."""
        if getattr(self, "_api", None) is None or self._api.api_client is not self.api_client:
            self._api = KubeApi(self.api_client)
        return self._api


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
    if is_profile(patient.context, run=patient.run):
        return True, None, None
    return False, (f"{patient.context!r} is not, so the workshop cannot build its images into it "
                   "(build them by hand, with each chapter's command)"), USE_MINIKUBE


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
    listed = images_on_node(patient.context, run=patient.run)
    missing = [image for image in wanted if not has_image(image, listed)]
    if missing:
        return False, f"missing {', '.join(missing)}", "python -m workshop images" + (
            f" --context {patient.context}" if patient.explicit_context else "")
    return True, f"{len(wanted)} images", None


def check_prometheus(patient):
    deployment = patient.api.get_or_none(f"/apis/apps/v1/namespaces/{patient.namespace}/deployments/prometheus")
    if deployment is None:
        return False, "Deployment prometheus is missing", APPLY
    if (deployment.get("status") or {}).get("availableReplicas", 0) < 1:
        return False, "Deployment prometheus has no available replica yet", \
            f"kubectl -n {patient.namespace} rollout status deployment/prometheus"
    return True, None, None


def check_echo(patient):
    """Stage 01 deployed, and one echo from inside the cluster through its Service."""
    with KubeBackend(api_client=patient.api_client) as backend:
        try:
            backend.deploy("01", timeout=patient.deploy_timeout_s)
        except TimeoutError as error:
            return False, f"stage 01 did not come up: {error}", \
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
    return True, f"stage 01 answered through Service {service}, {echoes[-1]['endpoints']} endpoints", None


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
    Check("profile", "the context is a minikube profile", check_profile, USE_MINIKUBE, ("context",)),
    Check("namespace", f"namespace {NAMESPACE}, Pod Security restricted", check_namespace, APPLY, ("api",)),
    Check("rbac", "RBAC for the load generator (ServiceAccount, Role, RoleBinding loadgen)", check_rbac,
          APPLY, ("namespace",)),
    Check("images", "the images on the node", check_images, "python -m workshop images", ("api", "profile")),
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
    """`minikube start`, for the profile named like the context if there is one."""
    if patient.context not in (None, "minikube") and is_profile(patient.context, run=patient.run):
        return f"minikube start -p {patient.context}"
    return "minikube start"


def last_lines(job, count=10):
    return textwrap.indent(job.last_lines(count) or "(no log)", "    ")
