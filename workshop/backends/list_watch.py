"""Follow a kind of object on a real cluster the way controllers do: list,
then watch from the list's resourceVersion, keeping the newest one seen.

- 410 Gone (our version is too old to resume from): list again. Repeated 410s
  back off (0.5 s, 1 s, 2 s … up to 8 s), so a struggling API server is not
  hammered with full lists.
- A read timeout on the client side: the server ends a watch after
  `timeoutSeconds`, but a connection that silently died (a laptop that slept,
  a dropped NAT entry) would leave the read blocked for ever.
- Any other error: wait a second, list again.

Objects are kept as the API's JSON (dicts), by name; `on_change(kind, obj)`
is called for every ADDED, MODIFIED and DELETED, from the watch thread. A
label selector is also checked on our side (kmock, our tests' API server,
ignores selectors), so a watcher never holds an object its selector excludes.
"""

import threading

from kubernetes import watch
from kubernetes.client.rest import ApiException
from urllib3.exceptions import ReadTimeoutError

WATCH_TIMEOUT_S = 60          # the server ends a watch after this; we resume from our version
READ_TIMEOUT_S = WATCH_TIMEOUT_S + 15
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 8.0


def has_labels(labels, wanted):
    """True if `labels` (a dict, or None) hold every key=value of `wanted`."""
    return all((labels or {}).get(key) == value for key, value in wanted.items())


def label_selector(wanted):
    return ",".join(f"{key}={value}" for key, value in wanted.items())


class ListWatcher:
    def __init__(self, api_client, list_function, namespace, on_change=None, read_timeout_s=READ_TIMEOUT_S,
                 labels=None, **selectors):
        """`list_function`: the client's namespaced list call, e.g.
        CoreV1Api(api_client).list_namespaced_pod; `labels`: an equality label
        selector as a dict; `selectors`: e.g. field_selector."""
        self.read_timeout_s = read_timeout_s
        self.labels = labels or {}
        if self.labels:
            selectors["label_selector"] = label_selector(self.labels)
        self.api_client = api_client
        self.list_function = list_function
        self.namespace = namespace
        self.selectors = selectors
        self.on_change = on_change or (lambda kind, obj: None)
        self.objects = {}             # name -> the object's JSON
        self.lock = threading.Lock()
        self.resource_version = None
        self.relists = 0
        self.watches = 0
        self.gone_in_a_row = 0        # consecutive 410s
        self.last_error = None
        self._watch = None
        self._response = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{list_function.__name__}", daemon=True)

    def start(self):
        self.relist()
        self._thread.start()
        return self

    def snapshot(self):
        with self.lock:
            return dict(self.objects)

    def relist(self):
        listing = self.api_client.sanitize_for_serialization(
            self.list_function(self.namespace, _request_timeout=self.read_timeout_s, **self.selectors))
        with self.lock:
            before, self.objects = self.objects, {o["metadata"]["name"]: o for o in listing["items"]
                                                  if has_labels(o["metadata"].get("labels"), self.labels)}
            self.resource_version = listing["metadata"].get("resourceVersion")
            self.relists += 1
        for name, obj in self.objects.items():
            self.on_change("MODIFIED" if name in before else "ADDED", obj)
        for name in before.keys() - self.objects.keys():
            self.on_change("DELETED", before[name])

    def apply_event(self, event):
        """One watch event, the object as the API's JSON."""
        kind, obj = event["type"], event["object"]
        metadata = obj.get("metadata", {})
        if kind != "BOOKMARK" and not has_labels(metadata.get("labels"), self.labels):
            return
        with self.lock:
            if kind in ("ADDED", "MODIFIED"):
                self.objects[metadata["name"]] = obj
            elif kind == "DELETED":
                self.objects.pop(metadata["name"], None)
            if metadata.get("resourceVersion"):
                self.resource_version = metadata["resourceVersion"]
        self.gone_in_a_row = 0
        if kind != "BOOKMARK" and not self._stop.is_set():
            self.on_change(kind, obj)

    def _run(self):
        while not self._stop.is_set():
            self._watch = watch.Watch()
            self.watches += 1
            try:
                for event in self._watch.stream(
                        self._watch_call, self.namespace, resource_version=self.resource_version,
                        timeout_seconds=WATCH_TIMEOUT_S, _request_timeout=self.read_timeout_s, **self.selectors):
                    self.apply_event(event)  # an ERROR event is raised as ApiException by the client
                    if self._stop.is_set():
                        return
                continue  # the server ended the watch: resume from our version
            except ReadTimeoutError as error:  # nothing came for too long: the connection may be dead
                self.last_error = error
                continue  # watch again from our version
            except ApiException as error:
                if error.status == 410:
                    self.gone_in_a_row += 1
                    self._relist_after(backoff_s(self.gone_in_a_row))
                    continue
                self.last_error = error
            except Exception as error:  # a dropped connection, a read timeout
                self.last_error = error
            self._relist_after(1)

    def _watch_call(self, *args, **kwargs):
        """The watch request with `watch=true` spelled as kubectl sends it (the
        client would send `True`). Having no docstring, it makes the client
        hand events over as plain JSON."""
        kwargs["watch"] = "true"
        self._response = self.list_function(*args, **kwargs)
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
            except (ValueError, AttributeError):
                pass  # that response had already ended: nothing is blocked on it
        if self._thread.is_alive():
            self._thread.join(timeout=5)


def backoff_s(attempt):
    """The wait before the `attempt`-th relist in a row after 410 Gone: the
    first one at once."""
    return 0 if attempt <= 1 else min(BACKOFF_FIRST_S * 2 ** (attempt - 2), BACKOFF_MAX_S)
