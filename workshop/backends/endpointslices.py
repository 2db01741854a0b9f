"""Follow a Service's endpoints on a real cluster through EndpointSlices
(discovery.k8s.io/v1; the Endpoints API is deprecated since 1.33).

List, then watch from the list's resourceVersion, keeping the newest one
seen; when the server says 410 Gone (the version is too old to resume from),
list again. Every change lands in an EndpointFeed: ready, non-terminating
endpoints only.
"""

import threading

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from ..feed import Endpoint, EndpointFeed

WATCH_TIMEOUT_S = 60  # the server ends a watch after this; we resume from our version


def ready_endpoints(endpoint_slice, port_name):
    """(pod, tcp://ip:port) of the slice's ready, non-terminating endpoints;
    the slice as the API's JSON (a dict)."""
    ports = [p["port"] for p in endpoint_slice.get("ports") or [] if p.get("name") == port_name]
    if not ports:
        return set()
    found = set()
    for endpoint in endpoint_slice.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        if not conditions.get("ready") or conditions.get("terminating"):
            continue
        address = endpoint["addresses"][0]
        pod = (endpoint.get("targetRef") or {}).get("name", address)
        found.add(Endpoint(pod, f"tcp://{address}:{ports[0]}"))
    return found


class EndpointSliceWatcher:
    def __init__(self, api_client, namespace, service, port_name="zmq", feed=None):
        self.api = client.DiscoveryV1Api(api_client)
        self.namespace = namespace
        self.selector = f"kubernetes.io/service-name={service}"
        self.port_name = port_name
        self.feed = feed or EndpointFeed()
        self.slices = {}           # slice name -> its endpoints
        self.resource_version = None
        self.relists = 0
        self.last_error = None
        self._watch = None
        self._response = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="endpointslices", daemon=True)

    def start(self):
        self.relist()
        self._thread.start()
        return self

    def relist(self):
        listing = self.api.api_client.sanitize_for_serialization(
            self.api.list_namespaced_endpoint_slice(self.namespace, label_selector=self.selector))
        self.slices = {s["metadata"]["name"]: ready_endpoints(s, self.port_name) for s in listing["items"]}
        self.resource_version = listing["metadata"].get("resourceVersion")
        self.relists += 1
        self._publish()

    def apply_event(self, event):
        """One watch event, the object as the API's JSON."""
        kind, endpoint_slice = event["type"], event["object"]
        metadata = endpoint_slice.get("metadata", {})
        if kind in ("ADDED", "MODIFIED"):
            self.slices[metadata["name"]] = ready_endpoints(endpoint_slice, self.port_name)
        elif kind == "DELETED":
            self.slices.pop(metadata["name"], None)
        if metadata.get("resourceVersion"):
            self.resource_version = metadata["resourceVersion"]
        self._publish()

    def _publish(self):
        self.feed.publish(set().union(*self.slices.values()))

    def _run(self):
        while not self._stop.is_set():
            self._watch = watch.Watch()
            try:
                for event in self._watch.stream(
                        self._watch_slices, self.namespace,
                        label_selector=self.selector, resource_version=self.resource_version,
                        timeout_seconds=WATCH_TIMEOUT_S):
                    self.apply_event(event)
                    if self._stop.is_set():
                        return
            except ApiException as error:
                if error.status == 410:  # our version expired: start over from a fresh list
                    self._relist_after(0)
                    continue
                self.last_error = error
            except Exception as error:  # a dropped connection: try again shortly
                self.last_error = error
            self._relist_after(1)

    def _watch_slices(self, *args, **kwargs):
        """The watch request, with `watch=true` spelled as kubectl sends it
        (the client would send `True`). Events arrive as plain JSON."""
        kwargs["watch"] = "true"
        self._response = self.api.list_namespaced_endpoint_slice(*args, **kwargs)
        return self._response

    def _relist_after(self, seconds):
        if self._stop.wait(seconds):
            return
        try:
            self.relist()
        except Exception as error:
            self.last_error = error

    def stop(self):
        """Stop watching now: shutting the open response ends the blocked read."""
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()
        if self._response is not None:
            try:
                self._response.shutdown()
            except ValueError:
                pass  # that response had already ended: nothing is blocked on it
        if self._thread.is_alive():
            self._thread.join(timeout=5)
