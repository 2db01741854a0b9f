"""The endpoint feed: which replicas a client may send to right now.

It models what the EndpointSlice controller gives a watcher: the ready,
non-terminating endpoints of a Service, with change notifications. Readers
either poll `snapshot()` (cheap: the load generator does, between sends) or
block in `wait_until()` for the endpoints they need.
"""

import threading
from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Endpoint:
    pod: str
    address: str  # a ZeroMQ endpoint, e.g. tcp://127.0.0.2:5555


class EndpointFeed:
    def __init__(self):
        self._changed = threading.Condition()
        self._endpoints = frozenset()
        self._version = 0

    def publish(self, endpoints):
        endpoints = frozenset(endpoints)
        with self._changed:
            if endpoints != self._endpoints:
                self._endpoints = endpoints
                self._version += 1
                self._changed.notify_all()

    def snapshot(self):
        """(version, endpoints): the version grows with every change."""
        with self._changed:
            return self._version, self._endpoints

    def wait_until(self, predicate, timeout):
        """Block until predicate(endpoints) holds; return whether it did."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self._endpoints), timeout)
