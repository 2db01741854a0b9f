"""NetworkPolicy ingress semantics, as a policy-enforcing network plugin
applies them, for the tests to ask: may this pod connect to that port of
that pod? It covers what the API defines for ingress (pod and namespace
selectors, ports by number, range or name, the default protocol) and refuses
ipBlock, which needs addresses the tests do not model."""

from dataclasses import dataclass, field


@dataclass
class Pod:
    namespace: str
    labels: dict
    ports: dict = field(default_factory=dict)      # port name -> containerPort (TCP)
    namespace_labels: dict | None = None           # default: what the API server sets

    def __post_init__(self):
        if self.namespace_labels is None:
            self.namespace_labels = {"kubernetes.io/metadata.name": self.namespace}


def selects(selector, labels):
    """A LabelSelector against `labels`; the empty selector selects everything."""
    labels = labels or {}
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for requirement in selector.get("matchExpressions", []):
        key, operator, values = requirement["key"], requirement["operator"], requirement.get("values", [])
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown operator {operator!r}")
    return True


def policy_types(policy):
    spec = policy["spec"]
    return spec.get("policyTypes") or ["Ingress"] + (["Egress"] if "egress" in spec else [])


def peer_matches(peer, policy_namespace, source):
    if "ipBlock" in peer:
        raise NotImplementedError("ipBlock peers are not modelled")
    if "namespaceSelector" in peer:
        if not selects(peer["namespaceSelector"], source.namespace_labels):
            return False
    elif source.namespace != policy_namespace:  # a podSelector alone: the policy's namespace
        return False
    return selects(peer.get("podSelector", {}), source.labels)


def port_matches(policy_port, target, port_name):
    if policy_port.get("protocol", "TCP") != "TCP":  # every port here is TCP
        return False
    wanted = policy_port.get("port")
    number = target.ports[port_name]
    if wanted is None:
        return True
    if isinstance(wanted, str):
        return wanted == port_name
    return wanted <= number <= policy_port.get("endPort", wanted)


def isolating(policies, target):
    """The ingress policies that select `target`."""
    return [p for p in policies if p["metadata"]["namespace"] == target.namespace
            and "Ingress" in policy_types(p) and selects(p["spec"]["podSelector"], target.labels)]


def admits(policies, source, target, port_name):
    """True if `source` may open a TCP connection to `target`'s port `port_name`."""
    selecting = isolating(policies, target)
    if not selecting:
        return True  # a pod no policy selects is not isolated
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or []:
            peers, ports = rule.get("from") or [], rule.get("ports") or []
            if (not peers or any(peer_matches(p, policy["metadata"]["namespace"], source) for p in peers)) and \
                    (not ports or any(port_matches(p, target, port_name) for p in ports)):
                return True
    return False
