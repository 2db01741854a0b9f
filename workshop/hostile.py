"""A hostile client, for the scenario that asks "can one client take a
replica down?": it sends megabyte frames to one replica, 100 a second, and
never reads a reply. A stage without limits echoes each one
and queues the echoes it cannot send, until the kernel kills it at its
memory limit; a stage with limits drops the peer at its first frame (libzmq
reconnects it every 100 ms, and it tries again).

It runs where the load runs (the host, or the load Job in the cluster) and
holds next to nothing itself: one frame buffer, sent without copying, and a
queue of two messages.
"""

import threading
import time

import zmq

ATTACKS = {"megabyte-frames": 1_000_000}  # the attack's name -> bytes per frame
FRAMES_PER_S = 100  # 100 MB/s: enough to fill a 256 MiB limit in seconds, without taking the machine's CPU
STUCK_S = 0.5  # no frame taken for this long: a new connection


class HostileClient:
    def __init__(self, endpoint, attack="megabyte-frames"):
        self.endpoint = endpoint
        self.payload = bytes(ATTACKS[attack])
        self.sent = 0
        self.dropped = 0  # times the server cut its connection
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-client", daemon=True)

    def start(self):
        self._thread.start()
        return self

    def _connect(self, context):
        sock = context.socket(zmq.DEALER)
        sock.linger = 0
        sock.sndhwm = 2            # what it holds itself: two frames
        sock.rcvhwm = 1            # never reads: the echoes stay with the server
        sock.setsockopt(zmq.RCVBUF, 4096)
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        sock.connect(self.endpoint)
        return sock, monitor

    def _count_drops(self, monitor):
        while monitor.poll(0):
            monitor.recv_multipart()  # a disconnection: the server cut us
            self.dropped += 1

    def _close(self, sock, monitor):
        self._count_drops(monitor)
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close()

    def _run(self):
        context = zmq.Context()
        sock, monitor = self._connect(context)
        last_sent = next_send = time.monotonic()
        try:
            while not self._stop.wait(max(0.0, next_send - time.monotonic())):
                self._count_drops(monitor)
                if not sock.poll(50, zmq.POLLOUT):
                    # Its queue is full: the server does not read, or it is gone. A libzmq
                    # socket that has stopped reading may never notice the peer died (the
                    # reset arrives on a connection it no longer polls): start afresh.
                    if time.monotonic() - last_sent > STUCK_S:
                        self._close(sock, monitor)
                        (sock, monitor), last_sent = self._connect(context), time.monotonic()
                    continue
                try:
                    sock.send(self.payload, zmq.NOBLOCK, copy=False)
                    self.sent += 1
                    last_sent = time.monotonic()
                    # Its pace: after a stall or a reconnect it goes on at its rate, never in a burst.
                    next_send = max(next_send, last_sent - 1 / FRAMES_PER_S) + 1 / FRAMES_PER_S
                except zmq.Again:  # the connection went between poll and send
                    pass
        finally:
            self._close(sock, monitor)
            context.term()

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=5)
