"""The Kubernetes API by path, every answer read as the API's JSON (dicts).

Never through the client's typed models: the API server is Go, and sends
what Go's encoding/json makes of its types, not what the client's
OpenAPI-generated models expect. An empty slice without `omitempty` comes as
`null` (an empty EndpointSlice's `endpoints` and `ports`, between two
deploys: kubernetes/kubernetes#135968), which the kubernetes client's models
rejected with `ValueError: Invalid value for endpoints, must not be None`
(kubernetes-client/python#2214, #2423); a field newer than the client's
models would be dropped, a timestamp re-formatted. The JSON is what the
server said. The client does what it is good at: the kubeconfig,
authentication, TLS and the connection pool.

Every answer's `Date` header goes to a `NodeClock`, which learns from it how
far the API server's clock — the node's — is from ours.
"""

import json
import time

from kubernetes.client.rest import ApiException

from .node_clock import NodeClock

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"          # RFC 7386: maps merge, lists are replaced
STRATEGIC_PATCH = "application/strategic-merge-patch+json"  # lists merge by key (containers, env by name)
TIMEOUT_S = (10, 30)  # connect, read: no call blocks for ever on a dead connection


class KubeApi:
    def __init__(self, api_client, clock=None):
        self.api_client = api_client
        self.clock = clock or NodeClock()

    # -- requests --

    def get(self, path, timeout_s=TIMEOUT_S, **query):
        return self.request("GET", path, query=query, timeout_s=timeout_s)

    def get_or_none(self, path, **query):
        """The object, or None if the API answers 404."""
        try:
            return self.get(path, **query)
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    def post(self, path, body):
        return self.request("POST", path, body=body)

    def patch(self, path, body, content_type=STRATEGIC_PATCH):
        return self.request("PATCH", path, body=body, content_type=content_type)

    def delete(self, path, **options):
        """DELETE with DeleteOptions (e.g. propagationPolicy, gracePeriodSeconds) in the body."""
        return self.request("DELETE", path, body={"apiVersion": "v1", "kind": "DeleteOptions", **options})

    def text(self, path, **query):
        """A plain-text answer (a pod's log)."""
        response = self._send("GET", path, query, None, JSON, TIMEOUT_S)
        return response.data.decode(errors="replace")

    def request(self, method, path, query=None, body=None, content_type=JSON, timeout_s=TIMEOUT_S):
        response = self._send(method, path, query, body, content_type, timeout_s)
        return json.loads(response.data) if response.data else None

    def stream(self, path, timeout_s, **query):
        """The open response of a watch, to be read line by line (`events()`)."""
        return self._send("GET", path, query, None, JSON, timeout_s, stream=True)

    def _send(self, method, path, query, body, content_type, timeout_s, stream=False):
        request = self.api_client.param_serialize(
            method, path, query_params=[(key, query_value(value)) for key, value in (query or {}).items()],
            header_params={"Accept": JSON, "Content-Type": content_type}, body=body,
            auth_settings=["BearerToken"])
        sent = time.time()
        answer = self.api_client.call_api(*request, _request_timeout=timeout_s)
        if "Date" in answer.headers:
            self.clock.observe(sent, answer.headers["Date"], time.time())
        response = answer.response  # urllib3's, its body not read yet
        if not 200 <= response.status <= 299:
            raise ApiException(status=response.status, reason=response.reason,
                               body=response.data.decode(errors="replace"))
        return response


def query_value(value):
    """A query parameter as the API server parses it: booleans as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def events(response):
    """The watch events of an open response, each a dict whose object is the
    API's JSON. An ERROR event (410 Gone: our resourceVersion is too old) is
    raised as ApiException with its code."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for text in lines:
            if not text.strip():
                continue
            event = json.loads(text)
            if event.get("type") == "ERROR":
                status = event.get("object") or {}
                raise ApiException(status=status.get("code"), reason=status.get("reason"),
                                   body=status.get("message"))
            yield event
