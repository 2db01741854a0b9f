"""The client's half: what a client owes the platform, so that one bad
replica costs it nothing. No server-side probe acts faster than its period
times its threshold; a client that keeps deadlines acts in a tenth of a second.

- **A deadline per attempt**, well under the 1 s after which a request counts
  as lost: an attempt unanswered for `deadline_s` is given up on.
- **A retry, only where it is safe**: the echo is idempotent (sending it twice
  does no harm), so a timed-out attempt is sent again to another endpoint. A
  request that changes something must not be retried blindly: HTTP says which
  methods are idempotent (RFC 9110 §9.2.2: GET, PUT, DELETE, not POST), gRPC
  retries only the methods its service config names, and a write made safe to
  repeat carries an idempotency key the server deduplicates on. The workshop's
  own fault requests are never retried.
- **A retry budget**: retries at most `budget_ratio` of the requests sent in
  the last second (plus `budget_min`), so a slow cluster is not hammered by
  retries on top of its load (Envoy's retry budget, gRPC's retry throttling).
- **Ejection**: an endpoint with `eject_after` time-outs in a row gets no
  requests for a back-off (doubled each time, up to `max_backoff_s`); then one
  request probes it, and an answer lets it back in (Envoy's outlier detection).
  When every endpoint is out, requests go to all of them (Envoy's panic mode):
  a slow answer beats none.
"""

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class Resilience:
    deadline_s: float = 0.1      # per attempt; a request is lost only after the load's timeout_s (1 s)
    eject_after: int = 3         # consecutive time-outs that take an endpoint out
    backoff_s: float = 1.0       # the first ejection's length, doubled each time...
    max_backoff_s: float = 8.0   # ...up to this
    budget_ratio: float | None = 0.1  # retries per request sent, over the last second (None: no budget)
    budget_min: int = 5          # retries allowed beyond the ratio, so a quiet client can retry too


class Outliers:
    """Which endpoints get requests: each one's time-outs in a row, and its
    ejection, if it is out."""

    def __init__(self, policy):
        self.policy = policy
        self.failures = {}       # endpoint -> consecutive time-outs
        self.ejections = {}      # endpoint -> ejections in a row (the back-off's exponent)
        self.out_until = {}      # endpoint -> when its back-off ends
        self.probing = set()     # endpoints let back for one request
        self.ejected = 0         # ejections so far

    @property
    def any_out(self):
        """True while some endpoint is ejected (or being probed)."""
        return bool(self.out_until)

    def usable(self, endpoint, now):
        """True if `endpoint` may get a request now: it is in, or its
        back-off is over and no probe request is on its way to it."""
        until = self.out_until.get(endpoint)
        return until is None or (now >= until and endpoint not in self.probing)

    def sending(self, endpoint):
        if endpoint in self.out_until:
            self.probing.add(endpoint)  # the one request that decides whether it is back

    def answered(self, endpoint):
        if not self.failures.get(endpoint) and endpoint not in self.out_until:
            return  # nothing to forget: the common case, kept cheap
        self.failures[endpoint] = 0
        self.ejections.pop(endpoint, None)
        self.out_until.pop(endpoint, None)
        self.probing.discard(endpoint)

    def timed_out(self, endpoint, now):
        self.failures[endpoint] = self.failures.get(endpoint, 0) + 1
        if endpoint in self.probing or self.failures[endpoint] >= self.policy.eject_after:
            self.probing.discard(endpoint)
            self.ejections[endpoint] = self.ejections.get(endpoint, 0) + 1
            backoff = self.policy.backoff_s * 2 ** (self.ejections[endpoint] - 1)
            self.out_until[endpoint] = now + min(self.policy.max_backoff_s, backoff)
            self.failures[endpoint] = 0
            self.ejected += 1


class RetryBudget:
    """Retries over the last `window_s`, at most a share of the requests sent."""

    def __init__(self, policy, window_s=1.0):
        self.policy, self.window_s = policy, window_s
        self.sends, self.retries = deque(), deque()

    def _forget(self, now):
        for times in (self.sends, self.retries):
            while times and times[0] <= now - self.window_s:
                times.popleft()

    def sent(self, now):
        self.sends.append(now)

    def allows(self, now):
        if self.policy.budget_ratio is None:
            return True
        self._forget(now)
        return len(self.retries) < self.policy.budget_ratio * len(self.sends) + self.policy.budget_min

    def retried(self, now):
        self.retries.append(now)
