"""Follow a Service's endpoints on a real cluster through EndpointSlices
(discovery.k8s.io/v1; the Endpoints API is deprecated since 1.33), into an
EndpointFeed: the ready, non-terminating endpoints only. The listing and
watching (resourceVersion, 410 Gone, time-outs) is `ListWatcher`'s.

A Service whose pods are all gone keeps one placeholder slice, and a real
API server sends its empty lists as `"endpoints": null, "ports": null` (Go
slices without omitempty): read as no endpoints."""

from ..feed import Endpoint, EndpointFeed
from .list_watch import ListWatcher

SERVICE_LABEL = "kubernetes.io/service-name"


def ready_endpoints(endpoint_slice, port_name):
    """(pod, tcp://ip:port) of the slice's ready, non-terminating endpoints;
    the slice as the API's JSON (a dict). The API says an unknown `ready`
    (null) is to be read as ready, and an unknown `terminating` as not."""
    ports = [p["port"] for p in endpoint_slice.get("ports") or [] if p.get("name") == port_name]
    if not ports:
        return set()
    found = set()
    for endpoint in endpoint_slice.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        if conditions.get("ready") is False or conditions.get("terminating"):
            continue
        address = endpoint["addresses"][0]
        pod = (endpoint.get("targetRef") or {}).get("name", address)
        found.add(Endpoint(pod, f"tcp://{address}:{ports[0]}"))
    return found


def slices_path(namespace):
    return f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"


class EndpointSliceWatcher:
    def __init__(self, api, namespace, service, port_name="zmq", feed=None, **watch_options):
        """`api`: a KubeApi."""
        self.port_name = port_name
        self.feed = feed or EndpointFeed()
        self.watcher = ListWatcher(api, slices_path(namespace), on_change=lambda kind, obj: self._publish(),
                                   labels={SERVICE_LABEL: service}, **watch_options)

    def start(self):
        self.watcher.start()
        self._publish()
        return self

    def _publish(self):
        slices = self.watcher.snapshot().values()
        self.feed.publish(set().union(*(ready_endpoints(s, self.port_name) for s in slices)))

    @property
    def relists(self):
        return self.watcher.relists

    def stop(self):
        self.watcher.stop()

    def alive(self):
        return self.watcher.alive()
