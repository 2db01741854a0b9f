"""Follow a kind of object on a real cluster the way controllers do: list,
then watch from the list's resourceVersion, keeping the newest one seen.

- Bookmarks are asked for (`allowWatchBookmarks`): the server then sends the
  newest resourceVersion now and then even when nothing we watch changed, so
  a watch resumed after a time-out starts from a recent version, not one the
  server may have compacted away (410).
- 410 Gone (our version is too old to resume from): list again. Repeated 410s
  back off (0.5 s, 1 s, 2 s … up to 8 s), so a struggling API server is not
  hammered with full lists.
- A read timeout on the client side: the server ends a watch after
  `timeoutSeconds`, but a connection that silently died (a laptop that slept,
  a dropped NAT entry) would leave the read blocked for ever.
- Any other error: wait a second, list again.

Lists and watch events are read as the API's JSON (`json_api`), never
through the client's typed models. Objects are kept by name;
`on_change(kind, obj)` is called for every ADDED, MODIFIED and DELETED, from
the watch thread. A label selector is also checked on our side (kmock, our
tests' API server, ignores selectors), so a watcher never holds an object
its selector excludes.

stop() ends the watch thread: the open response is shut (its blocked read
ends at once), and a watch opened while stopping is shut before it is read.
"""

import threading

from kubernetes.client.rest import ApiException

from .json_api import events

WATCH_TIMEOUT_S = 60          # the server ends a watch after this; we resume from our version
READ_TIMEOUT_S = WATCH_TIMEOUT_S + 15
BACKOFF_FIRST_S, BACKOFF_MAX_S = 0.5, 8.0
STOP_JOIN_S = 5               # a watch thread ends within this once stopped (its read is shut)


def has_labels(labels, wanted):
    """True if `labels` (a dict, or None) hold every key=value of `wanted`."""
    return all((labels or {}).get(key) == value for key, value in wanted.items())


def label_selector(wanted):
    return ",".join(f"{key}={value}" for key, value in wanted.items())


class ListWatcher:
    def __init__(self, api, path, on_change=None, read_timeout_s=READ_TIMEOUT_S, labels=None,
                 field_selector=None):
        """`api`: a KubeApi; `path`: the collection, e.g.
        /api/v1/namespaces/<ns>/pods; `labels`: an equality label selector as
        a dict; `field_selector`: e.g. metadata.name=echo."""
        self.api = api
        self.path = path
        self.read_timeout_s = read_timeout_s
        self.labels = labels or {}
        self.query = {}
        if self.labels:
            self.query["labelSelector"] = label_selector(self.labels)
        if field_selector:
            self.query["fieldSelector"] = field_selector
        self.on_change = on_change or (lambda kind, obj: None)
        self.objects = {}             # name -> the object's JSON
        self.lock = threading.Lock()
        self.resource_version = None
        self.relists = 0
        self.watches = 0
        self.bookmarks = 0
        self.gone_in_a_row = 0        # consecutive 410s
        self.last_error = None
        self._response = None         # the open watch, shut by stop()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch {path}", daemon=True)

    def start(self):
        self.relist()
        self._thread.start()
        return self

    def snapshot(self):
        with self.lock:
            return dict(self.objects)

    def relist(self):
        listing = self.api.get(self.path, **self.query)
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
        if kind == "BOOKMARK":
            self.bookmarks += 1
        elif not has_labels(metadata.get("labels"), self.labels):
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
            try:
                self._watch_once()
                continue  # the server ended the watch (or we stopped): resume from our version
            except ApiException as error:
                if error.status == 410:
                    self.gone_in_a_row += 1
                    self._relist_after(backoff_s(self.gone_in_a_row))
                    continue
                self.last_error = error
            except Exception as error:  # a dropped connection, a read timeout: the connection may be dead
                self.last_error = error
                if self._stop.is_set():
                    return  # our own shutdown of the response ended the read
            self._relist_after(1)

    def _watch_once(self):
        query = {**self.query, "watch": True, "allowWatchBookmarks": True, "timeoutSeconds": WATCH_TIMEOUT_S}
        if self.resource_version:
            query["resourceVersion"] = self.resource_version
        response = self.api.stream(self.path, timeout_s=(10, self.read_timeout_s), **query)
        with self.lock:
            self._response = response
            stopping = self._stop.is_set()
        try:
            if stopping:
                return  # stop() came while this watch was being opened
            self.watches += 1
            for event in events(response):
                self.apply_event(event)
                if self._stop.is_set():
                    return
        finally:
            # Closed before it goes back to the pool: a connection whose read
            # was shut mid-stream must not carry the next request.
            response.close()
            response.release_conn()

    def _relist_after(self, seconds):
        if self._stop.wait(seconds):
            return
        try:
            self.relist()
        except Exception as error:
            self.last_error = error

    def stop(self):
        """Stop watching now: shutting the open response ends the blocked read."""
        with self.lock:
            self._stop.set()
            response = self._response
        if response is not None:
            try:
                response.shutdown()
            except (ValueError, AttributeError, OSError):
                pass  # that response had already ended: nothing is blocked on it
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=STOP_JOIN_S)

    def alive(self):
        return self._thread.is_alive()


def backoff_s(attempt):
    """The wait before the `attempt`-th relist in a row after 410 Gone: the
    first one at once."""
    return 0 if attempt <= 1 else min(BACKOFF_FIRST_S * 2 ** (attempt - 2), BACKOFF_MAX_S)
