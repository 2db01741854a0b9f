"""The load generator: an endpoint-aware ZeroMQ client that times every request.

A Service balances per connection, and a ZeroMQ connection lives for ever, so
a client connected through a Service talks to one pod. This client follows
the endpoint feed instead (the talk's answer): one DEALER per ready endpoint,
requests spread round-robin. When an endpoint leaves the feed it gets no new
requests, but its socket stays open until the replies it owes have arrived or
timed out — closing it at once would throw away replies already on the way.
A request with no reply within `timeout_s` is lost.

Naive mode connects one DEALER to one address (a Service) and never looks at
the feed: the client most people write first.

`run_load()` is what a scenario runs, on the host (local backend, through
`BackgroundLoad`) or inside the cluster (kube backend, as a Job): wait until
every endpoint answers, then load it — optionally with a naive client through
the Service beside it, and a fault sent to one replica at a set time.
"""

import itertools
import math
import threading
import time
from dataclasses import dataclass, field

import zmq

from .client import echo_once, send_fault
from .hostile import HostileClient
from .resilience import Outliers, Resilience, RetryBudget


@dataclass
class Request:
    id: int
    sent: float
    endpoint: str | None
    attempt_sent: float = 0.0   # when its latest attempt went out (resilient mode)
    timed_out: bool = False     # its latest attempt passed its deadline


@dataclass
class LoadResult:
    """What happened to every request; times are seconds since the start."""

    sent: int = 0
    answered: int = 0
    lost: int = 0
    samples: list = field(default_factory=list)       # (sent at, latency s or None if lost, endpoint)
    per_endpoint: dict = field(default_factory=dict)  # endpoint -> requests sent to it
    retries: int = 0                                  # attempts beyond each request's first (resilient mode)
    ejections: int = 0                                # endpoints taken out after time-outs in a row


class LoadGenerator:
    def __init__(self, feed=None, rate=1000.0, timeout_s=1.0, naive_address=None, resilience=None):
        """rate: requests per second; either an endpoint feed to follow or
        the one address a naive client connects to. `resilience`: a
        resilience.Resilience, for deadlines, retries and ejection."""
        if (feed is None) == (naive_address is None):
            raise ValueError("give either an endpoint feed or a naive address")
        self.feed = feed
        self.rate = rate
        self.timeout_s = timeout_s
        self.naive_address = naive_address
        self.resilience = resilience

    def run(self, duration_s, during=None, start=None):
        """Send for at most `duration_s`, then wait up to `timeout_s` for the
        last replies. `during(elapsed)` is called about every 10 ms while
        sending; returning True stops sending. `start`: the monotonic time
        that counts as 0 (default: now)."""
        run = _Run(self, start)
        try:
            return run.loop(duration_s, during)
        finally:
            run.close()


class _Run:
    def __init__(self, generator, start):
        self.generator = generator
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
        self.start = start or time.monotonic()
        self.endpoint_of = {}      # DEALER -> endpoint
        policy = generator.resilience
        self.outliers = Outliers(policy) if policy else None
        self.budget = RetryBudget(policy) if policy else None

    def now(self):
        return time.monotonic() - self.start

    # -- endpoints --

    def connect(self, endpoint):
        sock = self.context.socket(zmq.DEALER)
        sock.linger = 0
        sock.connect(endpoint)
        self.sockets[endpoint] = sock
        self.endpoint_of[sock] = endpoint
        self.owed.setdefault(endpoint, 0)
        self.poller.register(sock, zmq.POLLIN)

    def follow_feed(self):
        if self.generator.naive_address is not None:
            if not self.sockets:
                self.connect(self.generator.naive_address)
                self.active = [self.generator.naive_address]
            return
        version, endpoints = self.generator.feed.snapshot()
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
            sock = self.sockets.pop(endpoint)
            del self.endpoint_of[sock]
            sock.close()

    # -- requests --

    def send(self):
        request = Request(next(self.ids), self.now(), None)
        self.result.sent += 1
        if self.budget:
            self.budget.sent(request.sent)
        endpoint = self.pick()
        if endpoint is None or not self.attempt(request, endpoint):
            self.give_up(request)

    def pick(self, besides=None):
        """The next endpoint, round-robin, among those that may get a request;
        if every one is ejected, among all (Envoy's panic mode: when all are
        slow, sending to a slow one beats sending to none)."""
        if besides is None and (self.outliers is None or not self.outliers.any_out):
            return self.active[next(self.turn) % len(self.active)] if self.active else None  # all in: the fast way
        now = self.now()
        others = [e for e in self.active if e != besides]
        usable = [e for e in others if self.outliers is None or self.outliers.usable(e, now)] or others
        return usable[next(self.turn) % len(usable)] if usable else None

    def attempt(self, request, endpoint):
        """Send `request` to `endpoint`; False if its queue is full (it is not keeping up)."""
        try:
            self.sockets[endpoint].send(request.id.to_bytes(8, "big"), zmq.NOBLOCK)
        except zmq.Again:
            return False
        request.endpoint, request.attempt_sent, request.timed_out = endpoint, self.now(), False
        if request.id in self.outstanding:  # a retry goes last: the outstanding stay in the order of their attempts
            del self.outstanding[request.id]
        self.outstanding[request.id] = request
        self.owed[endpoint] += 1
        self.result.per_endpoint[endpoint] = self.result.per_endpoint.get(endpoint, 0) + 1
        if self.outliers:
            self.outliers.sending(endpoint)
        return True

    def give_up(self, request):
        self.result.lost += 1
        self.result.samples.append((request.sent, None, request.endpoint))

    def receive(self, sock):
        endpoint = self.endpoint_of[sock]
        while True:
            try:
                reply = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            request = self.outstanding.pop(int.from_bytes(reply[:8], "big"), None)
            if request is None:
                continue  # a late reply to a request already counted lost (or answered by a retry)
            self.owed[request.endpoint] -= 1  # its latest attempt's, whichever attempt answered
            self.result.answered += 1
            self.result.samples.append((request.sent, self.now() - request.sent, endpoint))
            if self.outliers:
                self.outliers.answered(endpoint)

    def expire(self):
        if self.outliers:
            return self.expire_attempts()
        deadline = self.now() - self.generator.timeout_s
        while self.outstanding:
            request = next(iter(self.outstanding.values()))
            if request.sent > deadline:
                return
            del self.outstanding[request.id]
            self.owed[request.endpoint] -= 1
            self.give_up(request)

    def expire_attempts(self):
        """Resilient mode: an attempt past its deadline counts against its
        endpoint and is retried elsewhere if the budget allows (else it waits
        on for its reply); a request unanswered for timeout_s is lost."""
        now = self.now()
        attempt_deadline = now - self.generator.resilience.deadline_s
        due = []  # the outstanding are in the order of their attempts: the due ones come first
        for request in self.outstanding.values():
            if request.attempt_sent > attempt_deadline:
                break
            due.append(request)
        for request in due:
            if request.sent <= now - self.generator.timeout_s:
                del self.outstanding[request.id]
                self.owed[request.endpoint] -= 1
                if not request.timed_out:
                    self.outliers.timed_out(request.endpoint, now)
                self.give_up(request)
            elif not request.timed_out:
                request.timed_out = True
                self.outliers.timed_out(request.endpoint, now)
                self.retry(request, now)

    def retry(self, request, now):
        """Every request here is an echo, idempotent: safe to send twice. (The
        fault requests are not, and go out on a socket of their own, never retried.)"""
        if not self.budget.allows(now):
            return
        elsewhere = self.pick(besides=request.endpoint)
        if elsewhere is None:
            return
        earlier = request.endpoint
        if self.attempt(request, elsewhere):
            self.owed[earlier] -= 1  # its reply, if it comes, answers the request all the same
            self.result.retries += 1
            self.budget.retried(now)

    # -- the loop --

    def loop(self, end_s, during):
        next_send = 0.0
        next_hook = 0.0
        interval = 1 / self.generator.rate
        while True:
            now = self.now()
            if during is not None and now >= next_hook and now < end_s:
                if during(now):
                    end_s = now
                next_hook = now + 0.01
            sending = now < end_s
            if not sending and not self.outstanding:
                break
            self.follow_feed()
            if sending:
                while next_send <= now:
                    self.send()
                    next_send += interval
            # Sleep in poll until the next send is due; zmq_poll counts whole
            # milliseconds, and 0 would spin.
            wait_ms = min(5, math.ceil((next_send - self.now()) * 1000)) if sending else 5
            for sock, _ in self.poller.poll(max(1, wait_ms)):
                self.receive(sock)
            self.expire()
            self.close_idle()
        self.result.samples.sort(key=lambda s: s[0])
        if self.outliers:
            self.result.ejections = self.outliers.ejected
        return self.result

    def close(self):
        for sock in self.sockets.values():
            sock.close()
        self.context.term()


# -- a scenario's load: the same on the host and inside the cluster --

@dataclass
class LoadSpec:
    rate: float = 500                # requests per second of the endpoint-aware client
    timeout_s: float = 1.0           # a request unanswered for this long is lost
    max_s: float = 20                # the load stops by then at the latest
    fault: str | None = None         # crash, hang or slow:<ms>, sent to one replica...
    attack: str | None = None        # ...or a hostile client on it (hostile.ATTACKS), from...
    fault_at_s: float = 1.0          # ...this long after the load started
    naive_rate: float = 0            # a naive client through the Service too, at this rate
    resilient_rate: float = 0        # a resilient client beside it too (deadlines, retries, ejection)


@dataclass
class FaultSent:
    pod: str
    address: str
    t: float                         # load time it was sent at


@dataclass
class LoadOutcome:
    aware: LoadResult
    naive: LoadResult | None = None
    resilient: LoadResult | None = None
    fault: FaultSent | None = None


def wait_until_every_endpoint_answers(feed, timeout_s):
    """A stage without a readiness probe is listed before it listens: start
    measuring only once every endpoint in the feed echoes."""
    deadline = time.monotonic() + timeout_s
    while True:
        _, endpoints = feed.snapshot()
        if endpoints and all(echo_once(e.address) for e in endpoints):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the endpoints did not all answer within {timeout_s} s: {sorted(endpoints)}")
        feed.wait_until(lambda now: now != endpoints, timeout=0.1)  # or try again shortly


def run_load(feed, spec, service_address=None, on_started=None, on_fault=None, stop=None, ready_timeout_s=60):
    """Wait until every endpoint answers, then run `spec`'s load; return a
    LoadOutcome. `on_started()` is called as the clock starts, `on_fault(f)`
    once the fault is sent; `stop` (an Event) ends the sending early."""
    stop = stop or threading.Event()
    wait_until_every_endpoint_answers(feed, ready_timeout_s)
    start = time.monotonic()
    if on_started:
        on_started()
    outcome = LoadOutcome(aware=None)
    side_clients = []  # (thread, errors): the naive client and the resilient one, beside the aware one

    def beside(name, generator):
        errors = []

        def run():
            try:
                setattr(outcome, name, generator.run(spec.max_s, during=lambda t: stop.is_set(), start=start))
            except BaseException as error:  # raised below, in this function's thread
                errors.append(error)
        thread = threading.Thread(target=run, name=f"{name}-load", daemon=True)
        thread.start()
        side_clients.append((thread, errors))
    if spec.naive_rate:
        beside("naive", LoadGenerator(naive_address=service_address, rate=spec.naive_rate, timeout_s=spec.timeout_s))
    if spec.resilient_rate:
        beside("resilient", LoadGenerator(feed, rate=spec.resilient_rate, timeout_s=spec.timeout_s,
                                          resilience=Resilience()))

    hostile = []

    def during(t):
        if (spec.fault or spec.attack) and outcome.fault is None and t >= spec.fault_at_s:
            outcome.fault = strike_first_endpoint(feed, spec, t, hostile)
            if outcome.fault and on_fault:
                on_fault(outcome.fault)
        return stop.is_set()
    try:
        outcome.aware = LoadGenerator(feed, rate=spec.rate, timeout_s=spec.timeout_s).run(
            spec.max_s, during=during, start=start)
    finally:
        stop.set()  # the clients beside it and the hostile one stop with the aware one
        for client in hostile:
            client.stop()
        for thread, _ in side_clients:
            thread.join()
    for _, errors in side_clients:
        if errors:
            raise errors[0]
    return outcome


def strike_first_endpoint(feed, spec, t, hostile):
    """The spec's fault, or its hostile client (appended to `hostile`), goes
    to the ready endpoint whose pod name sorts first (None while there is
    none: the caller tries again)."""
    _, endpoints = feed.snapshot()
    if not endpoints:
        return None
    victim = min(endpoints)
    if spec.attack:
        hostile.append(HostileClient(victim.address, spec.attack).start())
    else:
        send_fault(victim.address, spec.fault)
    return FaultSent(victim.pod, victim.address, round(t, 3))


class BackgroundLoad:
    """run_load() on a thread of this process (the local backend's load),
    with the handle every backend's load offers the scenarios."""

    def __init__(self, feed, spec, service_address=None):
        self._stop = threading.Event()
        self.started_at = None
        self.fault = None
        self._outcome = None
        self._error = None

        def started():
            self.started_at = time.monotonic()

        def fault_sent(fault):
            self.fault = fault

        def run():
            try:
                self._outcome = run_load(feed, spec, service_address, started, fault_sent, self._stop)
            except BaseException as error:  # handed to the scenario's thread by result()
                self._error = error
        self._thread = threading.Thread(target=run, name="load", daemon=True)
        self._thread.start()

    def elapsed(self):
        """Seconds since the clock started (0 while endpoints are checked)."""
        return 0.0 if self.started_at is None else time.monotonic() - self.started_at

    def finished(self):
        return not self._thread.is_alive()

    def stop(self):
        """Stop sending; replies still owed are waited for."""
        self._stop.set()

    def result(self):
        """The LoadOutcome, once the load has finished."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._outcome
