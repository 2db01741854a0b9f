"""How far the node's clock is from ours, learnt from the API server's `Date`
headers.

A pod's wall clock is its node's. On minikube's VM drivers (and Docker
Desktop after a laptop slept) that clock drifts from the host's by seconds,
so a time the load Job writes (`time.time()` in the pod) cannot be placed on
the host's clock as it is. The API server runs on the node and stamps every
answer with `Date` (Go's net/http does), in whole seconds: when it wrote
`Date: D`, the node's clock read between D and D + 1, while ours read
between when we sent the request and when the answer came. So

    node - ours  is in  (D - received, D + 1 - sent)

and every answer narrows that interval: the host polls twice a second, at
times that fall at every phase of the node's second, so after a few seconds
the interval is a fraction of a second wide.
"""

import email.utils
import math
import threading


class NodeClock:
    def __init__(self):
        self._lock = threading.Lock()
        self.low, self.high = -math.inf, math.inf   # node - ours, seconds
        self.observations = 0

    def observe(self, sent, date_header, received):
        """One answer: sent and received on our wall clock (time.time())."""
        try:
            node = email.utils.parsedate_to_datetime(date_header).timestamp()
        except (TypeError, ValueError):
            return  # no usable Date: nothing learnt
        low, high = node - received, node + 1 - sent
        with self._lock:
            if max(low, self.low) > min(high, self.high):
                self.low, self.high = low, high  # inconsistent: the node's clock was stepped; start again
            else:
                self.low, self.high = max(low, self.low), min(high, self.high)
            self.observations += 1

    def offset_s(self):
        """node - ours, the middle of what is known; None before any answer."""
        with self._lock:
            if not self.observations:
                return None
            return (self.low + self.high) / 2

    def uncertainty_s(self):
        """Half the width of what is known: the offset is right within this."""
        with self._lock:
            return (self.high - self.low) / 2 if self.observations else math.inf

    def to_ours(self, node_time):
        """A time on the node's wall clock, on ours (unchanged before any answer)."""
        offset = self.offset_s()
        return node_time if offset is None else node_time - offset
