"""A replica that is slow, not broken: a ZeroMQ ROUTER on loopback that
answers every request `delay_s` after it came, as every replica does at once
when the whole cluster is overloaded (a slow disk, a cold cache, a noisy
neighbour). What a retry storm is made of: a retry goes to a replica as slow
as the first. Used by notebook 09 and tests/test_resilience.py."""

import threading
import time
from collections import deque

import zmq

from .feed import Endpoint, EndpointFeed


class SlowReplica:
    def __init__(self, delay_s):
        self.delay_s, self.stop = delay_s, threading.Event()
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.linger = 0
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"
        self.thread = threading.Thread(target=self._serve, name="slow-replica", daemon=True)
        self.thread.start()

    def _serve(self):
        due = deque()  # (when to answer, the request's frames), in arrival order
        while not self.stop.is_set():
            if self.sock.poll(1):
                due.append((time.monotonic() + self.delay_s, self.sock.recv_multipart()))
            while due and due[0][0] <= time.monotonic():
                self.sock.send_multipart(due.popleft()[1])
        self.sock.close()

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)


class SlowReplicas:
    """`count` slow replicas and a feed that lists them, as a context manager."""

    def __init__(self, count=3, delay_s=0.15):
        self.replicas = [SlowReplica(delay_s) for _ in range(count)]
        self.feed = EndpointFeed()
        self.feed.publish(Endpoint(f"slow-{i}", r.endpoint) for i, r in enumerate(self.replicas))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for replica in self.replicas:
            replica.close()
