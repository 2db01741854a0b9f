"""The load generator: an endpoint-aware ZeroMQ client that times every request.

A Service balances per connection, and a ZeroMQ connection lives for ever, so
a client connected through a Service talks to one pod. This client follows
the endpoint feed instead (the talk's answer): one DEALER per ready endpoint,
requests spread round-robin. When an endpoint leaves the feed it gets no new
requests, but its socket stays open until the replies it owes have arrived or
timed out — closing it at once would throw away replies already on the way.

A request with no reply within `timeout_s` is lost; with `retries`, it is sent
again to another endpoint, and counted as retried. Naive mode connects one
DEALER to one address (a Service) and never looks at the feed.
"""

import itertools
import json
import math
import time
from dataclasses import dataclass, field

import zmq


@dataclass
class Request:
    id: int
    first_sent: float
    sent: float
    endpoint: str | None
    attempts: int = 1


@dataclass
class LoadResult:
    """What happened to every request; times are seconds since the start."""

    sent: int = 0
    answered: int = 0
    lost: int = 0
    retried: int = 0
    samples: list = field(default_factory=list)       # (sent at, latency s or None if lost, endpoint)
    per_endpoint: dict = field(default_factory=dict)  # endpoint -> requests sent to it


class LoadGenerator:
    def __init__(self, feed=None, rate=1000.0, window=100, timeout_s=1.0, retries=0, naive_address=None):
        """rate: requests per second, or None for as fast as `window` in flight allows."""
        if (feed is None) == (naive_address is None):
            raise ValueError("give either an endpoint feed or a naive address")
        self.feed = feed
        self.rate = rate
        self.window = window
        self.timeout_s = timeout_s
        self.retries = retries
        self.naive_address = naive_address

    def run(self, duration_s, during=None):
        """Send for at most `duration_s`, then wait up to `timeout_s` for the
        last replies. `during(elapsed)` is called about every 10 ms, for
        scenarios to act while the load runs; returning True stops sending."""
        run = _Run(self)
        try:
            return run.loop(duration_s, during)
        finally:
            run.close()


class _Run:
    def __init__(self, spec):
        self.spec = spec
        self.context = zmq.Context()
        self.poller = zmq.Poller()
        self.sockets = {}          # endpoint -> DEALER
        self.active = []           # endpoints that get new requests
        self.owed = {}             # endpoint -> replies outstanding
        self.outstanding = {}      # request id -> Request, oldest first
        self.ids = itertools.count()
        self.turn = itertools.count()
        self.version = None
        self.result = LoadResult()
        self.start = time.monotonic()

    def now(self):
        return time.monotonic() - self.start

    # -- endpoints --

    def connect(self, endpoint):
        sock = self.context.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(endpoint)
        self.sockets[endpoint] = sock
        self.owed.setdefault(endpoint, 0)
        self.poller.register(sock, zmq.POLLIN)

    def follow_feed(self):
        if self.spec.naive_address is not None:
            if not self.sockets:
                self.connect(self.spec.naive_address)
                self.active = [self.spec.naive_address]
            return
        version, endpoints = self.spec.feed.snapshot()
        if version == self.version:
            return
        self.version = version
        addresses = sorted(e.address for e in endpoints)
        for address in addresses:
            if address not in self.sockets:
                self.connect(address)
        self.active = addresses
        self.close_idle()

    def close_idle(self):
        for endpoint in [e for e, s in self.sockets.items() if e not in self.active and not self.owed[e]]:
            self.poller.unregister(self.sockets[endpoint])
            self.sockets.pop(endpoint).close()

    # -- requests --

    def send(self, request_id=None, first_sent=None):
        now = self.now()
        if request_id is None:
            request_id, first_sent = next(self.ids), now
            self.result.sent += 1
        if not self.active:
            return self.give_up(Request(request_id, first_sent, now, None))
        endpoint = self.active[next(self.turn) % len(self.active)]
        try:
            self.sockets[endpoint].send(request_id.to_bytes(8, "big"), zmq.NOBLOCK)
        except zmq.Again:  # the endpoint's queue is full: it is not keeping up
            return self.give_up(Request(request_id, first_sent, now, endpoint))
        self.outstanding[request_id] = Request(request_id, first_sent, now, endpoint)
        self.owed[endpoint] += 1
        self.result.per_endpoint[endpoint] = self.result.per_endpoint.get(endpoint, 0) + 1

    def give_up(self, request):
        self.result.lost += 1
        self.result.samples.append((request.first_sent, None, request.endpoint))

    def receive(self, sock):
        while True:
            try:
                reply = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            request = self.outstanding.pop(int.from_bytes(reply[:8], "big"), None)
            if request is None:
                continue  # a late reply to a request already counted lost or resent
            self.owed[request.endpoint] -= 1
            self.result.answered += 1
            self.result.samples.append((request.first_sent, self.now() - request.first_sent, request.endpoint))

    def expire(self):
        deadline = self.now() - self.spec.timeout_s
        while self.outstanding:
            request = next(iter(self.outstanding.values()))
            if request.sent > deadline:
                return
            del self.outstanding[request.id]
            self.owed[request.endpoint] -= 1
            if request.attempts <= self.spec.retries:
                self.result.retried += 1
                self.send(request.id, request.first_sent)
                if request.id in self.outstanding:
                    self.outstanding[request.id].attempts = request.attempts + 1
            else:
                self.give_up(request)

    # -- the loop --

    def loop(self, end_s, during):
        next_send = 0.0
        next_hook = 0.0
        interval = 1 / self.spec.rate if self.spec.rate else 0
        while True:
            now = self.now()
            if during is not None and now >= next_hook and now < end_s:
                if during(now):
                    end_s = now
                next_hook = now + 0.01
            sending = now < end_s
            if not sending and not self.outstanding:
                break
            if not sending and now > end_s + self.spec.timeout_s * (self.spec.retries + 1) + 1:
                break
            self.follow_feed()
            if sending:
                if self.spec.rate:
                    while next_send <= now:
                        self.send()
                        next_send += interval
                elif self.active:
                    while len(self.outstanding) < self.spec.window:
                        self.send()
            # Sleep in poll until the next send is due; zmq_poll counts whole
            # milliseconds, and 0 would spin.
            wait_ms = min(5, math.ceil((next_send - self.now()) * 1000)) if sending and self.spec.rate else 5
            for sock, _ in self.poller.poll(max(1, wait_ms)):
                self.receive(sock)
            self.expire()
            self.close_idle()
        for request in list(self.outstanding.values()):
            self.give_up(request)
        self.outstanding.clear()
        self.result.samples.sort(key=lambda s: s[0])
        return self.result

    def close(self):
        for sock in self.sockets.values():
            sock.close()
        self.context.term()


def to_json_lines(result, chunk=500):
    """A LoadResult as JSON lines short enough for any container log: the
    samples in chunks, then the totals."""
    for start in range(0, len(result.samples), chunk):
        yield json.dumps({"samples": result.samples[start:start + chunk]})
    totals = {k: v for k, v in vars(result).items() if k != "samples"}
    yield json.dumps({"result": totals})


def from_json_lines(lines):
    """The LoadResult that to_json_lines() wrote, read back from a log; lines
    that are not ours are skipped. None if the totals line is missing."""
    samples, totals = [], None
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and "samples" in record:
            samples.extend(tuple(s) for s in record["samples"])
        elif isinstance(record, dict) and "result" in record:
            totals = record["result"]
    return None if totals is None else LoadResult(samples=samples, **totals)
