"""A Service for the local backend: kube-proxy's load balancing, as a relay.

What it models of kube-proxy (iptables mode) for one Service:

- balancing per *connection*: each new TCP connection goes to one ready
  endpoint picked at random from the endpoint feed — what kube-proxy has been
  told, so it lags the pods like any watcher of EndpointSlices;
- conntrack: an established connection keeps going to its pod after the
  endpoint has left the feed, until the pod's process is gone;
- no ready endpoint, or the pod refuses: the client's connection is reset
  (iptables REJECTs the SYN; we have accepted it already, so a RST right after
  is as close as we get);
- a side's end reaches the other side as it happened: a FIN as a FIN, after
  all the data before it (a half-close: the other direction goes on until it
  ends too), a reset as a reset.

So a ZeroMQ client, whose connection lives for ever, talks to one pod through
it, and moves to another only when its pod's connection ends.

What it does not model: no virtual IP (the Service is `tcp://host:port`, a
port of its own on loopback); no session affinity; no iptables `statistic`
probabilities (one uniform `random.choice` instead of their rule-by-rule
arithmetic); no SYN-level REJECT (the handshake completes before the reset);
and, as a userspace relay, it adds a hop's latency (two more copies and
thread switches) that kernel DNAT does not.
"""

import random
import socket
from collections import Counter
import struct
import threading
import time
from contextlib import suppress
from urllib.parse import urlsplit

CHUNK = 64 * 1024          # bytes per recv
CONNECT_TIMEOUT_S = 1.0    # to a pod: on loopback it is refused or accepted at once
ACCEPT_POLL_S = 0.1        # how soon the accept loop notices close()
JOIN_TIMEOUT_S = 5.0       # close() waits at most this long, in all, for its threads
LINGER_ZERO = struct.pack("ii", 1, 0)  # struct linger {on, 0 s}: close() sends a RST


def reset_socket(sock):
    """Close abortively: the peer gets a RST, not a FIN."""
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
    sock.close()


def host_port(address):
    """("127.0.0.2", 5555) from "tcp://127.0.0.2:5555"."""
    parts = urlsplit(address)
    return parts.hostname, parts.port


class Relay:
    """One client connection and its connection to the pod.

    Why threads, one per direction: blocking recv/sendall keep the bytes in
    order and give back-pressure for free (a client that does not read stops
    us reading the pod), and how each direction ends — EOF or reset — is a
    straight line of code. A selectors loop would need a buffer and read/write
    interest bookkeeping per direction. Threads block only in recv, sendall
    and join; reset() and abort() wake them with shutdown()."""

    def __init__(self, client, pod, endpoint, on_end):
        self.client, self.pod, self.endpoint = client, pod, endpoint
        self._on_end = on_end
        self._lock = threading.Lock()
        self._reset = False
        self.bytes_to_pod = 0
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"service-to-{endpoint.pod}")

    def start(self):
        self.thread.start()

    def _run(self):
        to_client = threading.Thread(target=self._pump, args=(self.pod, self.client), daemon=True,
                                     name=f"service-from-{self.endpoint.pod}")
        to_client.start()
        self._pump(self.client, self.pod)
        to_client.join()  # bounded by the pod's side ending, or by reset()/abort()
        self.client.close()  # after reset(), SO_LINGER 0 makes these RSTs
        self.pod.close()
        self._on_end(self)

    def _pump(self, src, dst):
        """Copy src to dst until src ends; then pass its end on."""
        try:
            while data := src.recv(CHUNK):
                dst.sendall(data)
                if dst is self.pod:
                    self.bytes_to_pod += len(data)
        except OSError:  # src was reset, or dst was while we wrote to it
            self.reset()
            return
        with self._lock:
            if not self._reset:  # a real EOF, not reset() waking us: a FIN for a FIN
                with suppress(OSError):
                    dst.shutdown(socket.SHUT_WR)

    def reset(self, how=socket.SHUT_RD):
        """Reset both sides: SO_LINGER 0, so closing them sends RSTs. SHUT_RD
        wakes the other direction if it waits in recv, and sends nothing; a
        thread blocked sending to a peer that does not read stays blocked
        until the peer reads or leaves (abort() wakes it as well)."""
        with self._lock:
            self._reset = True
            for sock in (self.client, self.pod):
                with suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
                    sock.shutdown(how)

    def abort(self):
        """close() of the Service: wake every blocked call, recv and send
        alike (each side sees a FIN, then the RST)."""
        self.reset(socket.SHUT_RDWR)


class LocalService:
    """kube-proxy for one Service of the local backend: a TCP relay on
    `address` that sends each new connection to a random ready endpoint of
    `feed` and keeps it there for the connection's life."""

    def __init__(self, feed, host="127.0.0.1"):
        self.feed = feed
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(ACCEPT_POLL_S)
        self.address = f"tcp://{host}:{self._listener.getsockname()[1]}"
        self.rejected = 0  # client connections reset: no ready endpoint, or the pod refused
        self._lock = threading.Lock()
        self._relays = {}  # Relay -> None: an ordered set, oldest connection first
        self._bytes_to_gone = Counter()  # pod -> bytes relayed to it by connections that ended
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name=f"service-{self.address}")

    def start(self):
        self._thread.start()
        return self

    def connections(self):
        """The pod of each connection relayed right now, oldest first."""
        with self._lock:
            return [relay.endpoint.pod for relay in self._relays]

    def bytes_to_pods(self):
        """pod -> bytes clients sent it through this Service: who did the work."""
        with self._lock:
            counted = Counter(self._bytes_to_gone)
            for relay in self._relays:
                counted[relay.endpoint.pod] += relay.bytes_to_pod
        return counted

    def close(self):
        """Stop accepting, reset every relayed connection, join every thread."""
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(timeout=ACCEPT_POLL_S + CONNECT_TIMEOUT_S + 1)
        self._listener.close()
        with self._lock:
            relays = list(self._relays)
        for relay in relays:
            relay.abort()
        for relay in relays:
            relay.thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def _accept_loop(self):
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:  # e.g. out of file descriptors: pause, retry
                self._closing.wait(ACCEPT_POLL_S)
                continue
            client.settimeout(None)
            self._route(client)

    def _route(self, client):
        """Pick a ready endpoint at random and connect to it, or reset the client."""
        _, endpoints = self.feed.snapshot()
        if not endpoints:
            self._reject(client)
            return
        endpoint = random.choice(sorted(endpoints))
        try:
            pod = socket.create_connection(host_port(endpoint.address), timeout=CONNECT_TIMEOUT_S)
        except OSError:
            self._reject(client)
            return
        pod.settimeout(None)
        relay = Relay(client, pod, endpoint, self._forget)
        with self._lock:  # close() lists the relays under this lock: none can slip past it
            if not self._closing.is_set():
                self._relays[relay] = None
                relay.start()
                return
        reset_socket(client)
        reset_socket(pod)

    def _reject(self, client):
        with self._lock:
            self.rejected += 1
        reset_socket(client)

    def _forget(self, relay):
        with self._lock:
            self._relays.pop(relay, None)
            self._bytes_to_gone[relay.endpoint.pod] += relay.bytes_to_pod
