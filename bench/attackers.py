"""Clients that try to take an echo replica down, and one that only wants its
echoes: the pieces the attack tests (tests/test_attacks.py) and the attack
table (bench/attacks.py) are built from. All on loopback, every wait bounded.

- Flood: real DEALER sockets sending as fast as libzmq lets them, never
  reading a reply.
- Connections: thousands of raw TCP sockets, each sending an opening (nothing,
  a ZeroMQ handshake, or HTTP headers that never end) and then holding on.
  A ZMTP 3.0 greeting plus a NULL READY is all it takes to be a ZeroMQ peer,
  at the cost of a file descriptor, not of a libzmq socket and its thread.
- frame_bomb: one message of many empty frames, on one such raw peer.
- GoodClient: one echo at a time, through the whole attack, counting answers.
"""

import errno
import itertools
import os
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import zmq

from workshop.client import wait_for_first_echo

# ZMTP 3.0 (rfc.zeromq.org/spec/23): signature, version 3.0, mechanism NULL,
# as-server 0, filler; then the READY command saying we are a DEALER.
GREETING = b"\xff" + bytes(8) + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" + bytes(31)
READY_BODY = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
READY = b"\x04" + bytes([len(READY_BODY)]) + READY_BODY
ZMTP_OPENING = GREETING + READY
# An HTTP request whose headers never end: a thread-per-connection server
# keeps a thread blocked reading each one.
SLOW_HTTP_OPENING = b"GET /metrics HTTP/1.1\r\nHost: echo\r\nX-Slow: "


def until(condition, timeout_s, interval_s=0.02):
    """Poll `condition` until it returns something truthy, and return that;
    after `timeout_s`, return its last (falsy) answer."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            return result
        time.sleep(interval_s)
    return result


def zmtp_handshake_done(received):
    """Did the server's side of the handshake arrive: its greeting, then a
    whole READY command (short or long frame)?"""
    if len(received) < len(GREETING) + 2:
        return False
    flags = received[len(GREETING)]
    if flags & 0x02:  # long command: 8-byte size
        header = len(GREETING) + 9
        if len(received) < header:
            return False
        size = struct.unpack(">Q", bytes(received[len(GREETING) + 1:header]))[0]
    else:
        header, size = len(GREETING) + 2, received[len(GREETING) + 1]
    return bool(flags & 0x04) and len(received) >= header + size and received[header + 1:header + 6] == b"READY"


def zmtp_message(frames):
    """The bytes of one message on the wire: short frames, MORE on all but the last."""
    wire = bytearray()
    for index, frame in enumerate(frames):
        more = 0x01 if index < len(frames) - 1 else 0x00
        if len(frame) < 256:
            wire += bytes([more, len(frame)])
        else:
            wire += bytes([more | 0x02]) + struct.pack(">Q", len(frame))
        wire += frame
    return bytes(wire)


def host_port(endpoint):
    host, _, port = endpoint.removeprefix("tcp://").rpartition(":")
    return host, int(port)


class Connections:
    """`count` raw TCP connections to (host, port), opened without blocking
    in batches; each sends `opening` once connected and keeps the first bytes
    it gets back. Connections the kernel does not complete (a full accept
    queue drops the SYN) stay pending: `connected` says how many did.

    Batches, not one burst: a burst of thousands of SYNs overflows any accept
    queue at once and then waits for the kernel's retransmissions (1 s, 3 s,
    7 s ...), which would measure the retry timer, not the server."""

    KEEP_BYTES = 256  # enough for a ZMTP greeting and READY
    BATCH = 200
    BATCH_WAIT_S = 0.1  # a loopback connect completes in well under a millisecond

    def __init__(self, host, port, count, opening=b""):
        self.opening = opening
        self.selector = selectors.DefaultSelector()
        self.sockets = []
        self.received = {}
        self.connected = 0
        self.failed = 0
        for first in range(0, count, self.BATCH):
            for _ in range(min(self.BATCH, count - first)):
                self._connect(host, port)
            wanted = len(self.sockets)
            deadline = time.monotonic() + self.BATCH_WAIT_S
            while self.connected + self.failed < wanted and time.monotonic() < deadline:
                self.pump(0.01)

    def _connect(self, host, port):
        sock = socket.socket()
        sock.setblocking(False)
        if sock.connect_ex((host, port)) not in (0, errno.EINPROGRESS):
            sock.close()
            self.failed += 1
            return
        self.sockets.append(sock)
        self.selector.register(sock, selectors.EVENT_WRITE)

    def pump(self, timeout_s=0.05):
        """Handle what happened on the sockets: connects completing, bytes arriving."""
        for key, mask in self.selector.select(timeout_s):
            sock = key.fileobj
            if mask & selectors.EVENT_WRITE:
                if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    self.selector.unregister(sock)
                    self.failed += 1
                    continue
                self.connected += 1
                self.received[sock] = bytearray()
                try:
                    sock.send(self.opening)
                except OSError:
                    pass
                self.selector.modify(sock, selectors.EVENT_READ)
            elif mask & selectors.EVENT_READ:
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:  # closed by the server
                    self.selector.unregister(sock)
                    continue
                kept = self.received[sock]
                kept += data[: self.KEEP_BYTES - len(kept)]
                if len(kept) >= self.KEEP_BYTES:
                    self.selector.unregister(sock)  # seen enough; stop reading

    def settle(self, timeout_s, quiet_s=0.5):
        """Pump until every socket has connected, or nothing changed for
        `quiet_s`, or `timeout_s` passed."""
        deadline = time.monotonic() + timeout_s
        last_change, last_state = time.monotonic(), None
        while time.monotonic() < deadline:
            self.pump()
            state = (self.connected, self.failed, self.handshaked())
            if state != last_state:
                last_change, last_state = time.monotonic(), state
            elif time.monotonic() - last_change > quiet_s:
                break
        return self

    def handshaked(self):
        return sum(1 for kept in self.received.values() if zmtp_handshake_done(kept))

    def close(self):
        self.selector.close()
        for sock in self.sockets:
            sock.close()
        self.sockets = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def frame_bomb(endpoint, frame_count, timeout_s=30):
    """Complete a handshake on a raw socket, then send ONE message of
    `frame_count` empty frames (2 bytes each on the wire). Return the socket:
    closing it at once could make the server drop the message unread."""
    sock = socket.create_connection(host_port(endpoint), timeout=timeout_s)
    sock.sendall(ZMTP_OPENING)
    received = bytearray()
    deadline = time.monotonic() + timeout_s
    while not zmtp_handshake_done(received) and time.monotonic() < deadline:
        data = sock.recv(4096)
        if not data:
            break
        received += data
    # zmtp_message([b""] * frame_count), built the fast way: flags, size 0.
    sock.sendall(b"\x01\x00" * (frame_count - 1) + b"\x00\x00")
    return sock


def churn(endpoint, count, timeout_s=1):
    """Connect and close `count` times; return how many connects succeeded."""
    address, succeeded = host_port(endpoint), 0
    for _ in range(count):
        try:
            with socket.create_connection(address, timeout=timeout_s):
                succeeded += 1
        except OSError:
            pass
    return succeeded


def tcp_connect_succeeds(endpoint, timeout_s=1):
    """A kubelet tcpSocket probe: does a fresh TCP connect complete in time?"""
    try:
        with socket.create_connection(host_port(endpoint), timeout=timeout_s):
            return True
    except OSError:
        return False


def healthcheck(stage_dir, endpoint, timeout_s=10):
    """Run the stage's healthcheck.py as the kubelet's exec probe; its exit code
    (None if it hung past `timeout_s`)."""
    try:
        return subprocess.run([sys.executable, "healthcheck.py"], cwd=stage_dir,
                              env={**os.environ, "ECHO_BIND": endpoint},
                              capture_output=True, timeout=timeout_s).returncode
    except subprocess.TimeoutExpired:
        return None


def huge_http_requests(port, clients, header_lines, line_bytes, timeout_s=30):
    """`clients` GET /metrics requests at once, each with `header_lines`
    headers of `line_bytes`; the status code each got (None: no answer)."""
    header = b"X-Padding: " + b"p" * (line_bytes - 14) + b"\r\n"
    request = b"GET /metrics HTTP/1.1\r\nHost: echo\r\n" + header * header_lines + b"\r\n"
    statuses = [None] * clients

    def send(index):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
                try:
                    sock.sendall(request)
                except OSError:  # the server answered and closed before it read everything
                    pass
                status_line = sock.makefile("rb").readline()
                statuses[index] = int(status_line.split()[1]) if status_line else None
        except (OSError, ValueError, IndexError):
            pass
    threads = [threading.Thread(target=send, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s + 5)
    return statuses


def scrape(port, timeout_s=5):
    """GET /metrics; the body, or None if it failed or took too long."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as response:
            return response.read().decode()
    except OSError:
        return None


class Flood:
    """`clients` DEALERs in one thread, each sending messages of
    `frames_per_message` frames (cycled: range(8, 65) gives 8 to 64) of
    `frame_bytes` bytes, as fast as libzmq takes them, never reading a
    reply, until `messages` are sent or stop(). Frames are sent zero-copy
    from one buffer, so gigabytes of attack cost the attacker nothing."""

    def __init__(self, endpoint, clients=1, frames_per_message=(1,), frame_bytes=64, messages=None):
        self.context = zmq.Context()
        self.sockets = []
        for _ in range(clients):
            sock = self.context.socket(zmq.DEALER)
            sock.linger = 0
            # Never reading means the replies stay with the server: our libzmq
            # takes in one and the kernel a little, then TCP pushes back. (With
            # the default of 1000 our own I/O thread would read them all in.)
            sock.rcvhwm = 1
            sock.setsockopt(zmq.RCVBUF, 4096)
            sock.connect(endpoint)
            self.sockets.append(sock)
        self.frame_counts = itertools.cycle(frames_per_message)
        self.payload = bytes(frame_bytes)
        self.zero_copy = frame_bytes >= 64 * 1024
        self.limit = messages
        self.sent = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _send(self, sock, frames):
        """One whole message, or False if the socket's queue is full. libzmq
        takes a multipart message whole once it takes its first frame."""
        try:
            sock.send(self.payload, zmq.NOBLOCK | (zmq.SNDMORE if frames > 1 else 0), copy=not self.zero_copy)
        except zmq.Again:
            return False
        for index in range(1, frames):
            sock.send(self.payload, zmq.SNDMORE if index < frames - 1 else 0, copy=not self.zero_copy)
        return True

    def _run(self):
        poller = zmq.Poller()
        for sock in self.sockets:
            poller.register(sock, zmq.POLLOUT)
        while not self.stopping.is_set() and (self.limit is None or self.sent < self.limit):
            progress = False
            for sock in self.sockets:
                if self._send(sock, next(self.frame_counts)):
                    self.sent += 1
                    progress = True
            if not progress:
                poller.poll(50)  # every queue full: wait for room, or to be stopped

    def done(self):
        return not self.thread.is_alive()

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=30)
        if self.thread.is_alive():
            # Its sockets are still in use: closing them from here would abort the
            # interpreter inside libzmq. Leave them to the daemon thread and say so.
            raise RuntimeError("the attacker's thread did not stop within 30 s")
        for sock in self.sockets:
            sock.close(linger=0)
        self.context.term()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class GoodClient:
    """An ordinary client in its own thread: one echo at a time, each given up
    to `patience_s` (a generous bound: a stall is fine, a lost answer is not),
    a short pause between them. stop() ends with one more echo, so the count
    includes an answer after the attack."""

    def __init__(self, endpoint, patience_s=10, pause_s=0.05, still_running=lambda: True):
        self.endpoint = endpoint
        self.still_running = still_running  # no point waiting for a dead server
        self.patience_s = patience_s
        self.pause_s = pause_s
        self.sent = 0
        self.answered = 0
        self.longest_wait_s = 0.0
        self.waits_s = []  # of every answered echo
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        # Connected (and handshaked, by a first echo) before the attack
        # starts: an existing peer, as the claims say.
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.linger = 0
        self.socket.connect(endpoint)
        self._echo()

    def _echo(self):
        payload = b"good %d" % self.sent
        self.sent += 1
        started = time.monotonic()
        self.socket.send(payload)
        while time.monotonic() - started < self.patience_s and self.still_running():
            # A late answer to an earlier echo is skipped.
            if self.socket.poll(100) and self.socket.recv() == payload:
                self.answered += 1
                self.waits_s.append(time.monotonic() - started)
                break
        self.longest_wait_s = max(self.longest_wait_s, time.monotonic() - started)

    def _run(self):
        while not self.stopping.is_set():
            self._echo()
            self.stopping.wait(self.pause_s)
        self._echo()

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        if self.socket.closed:
            return self
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=2 * self.patience_s + 5)
        self.socket.close()
        self.context.term()
        return self

    def p99_ms(self):
        waits = sorted(self.waits_s)
        return round(waits[min(len(waits) - 1, int(len(waits) * 0.99))] * 1000, 1) if waits else None

    def every_answer(self):
        return self.sent > 0 and self.answered == self.sent

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Squatters:
    """`count` raw connections held by a thread of their own, each opened again
    as soon as the server cuts it: descriptors held for as long as they run.
    Each sends `opening` at once, or (with `trickle_s`) one byte of it every
    `trickle_s` seconds, a handshake too slow ever to finish. `cuts` counts
    the connections the server closed."""

    def __init__(self, endpoint, count, opening=ZMTP_OPENING, trickle_s=None):
        self.address = host_port(endpoint)
        self.count, self.opening, self.trickle_s = count, opening, trickle_s
        self.selector = selectors.DefaultSelector()
        self.sent = {}  # socket -> bytes of the opening sent so far
        self.cuts = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _connect(self):
        sock = socket.socket()
        sock.setblocking(False)
        sock.connect_ex(self.address)  # completes (or is refused) in the selector
        self.sent[sock] = 0
        self.selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def _drop(self, sock):
        self.selector.unregister(sock)
        del self.sent[sock]
        sock.close()

    def _send_more(self, sock):
        step = 1 if self.trickle_s else len(self.opening)
        try:
            self.sent[sock] += sock.send(self.opening[self.sent[sock]:self.sent[sock] + step])
        except OSError:
            pass

    def _run(self):
        for _ in range(self.count):
            self._connect()
        next_trickle = time.monotonic()
        while not self.stopping.is_set():
            for key, mask in self.selector.select(0.05):
                sock = key.fileobj
                if mask & selectors.EVENT_WRITE:  # connected (or failed): say the first thing, then listen
                    self.selector.modify(sock, selectors.EVENT_READ)
                    self._send_more(sock)
                    continue
                try:
                    data = sock.recv(4096)
                except OSError:
                    data = b""
                if not data:  # cut by the server: come straight back
                    self.cuts += 1
                    self._drop(sock)
                    self._connect()
            if self.trickle_s and time.monotonic() >= next_trickle:
                next_trickle = time.monotonic() + self.trickle_s
                for sock in list(self.sent):
                    if self.sent[sock] < len(self.opening):
                        self._send_more(sock)

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self.stopping.set()
        self.thread.join(timeout=10)
        for sock in list(self.sent):
            self._drop(sock)
        self.selector.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def fresh_client_waits_s(endpoint, timeout_s):
    """How long a client that connects now waits for its first echo (None: it
    got none within `timeout_s`)."""
    try:
        return wait_for_first_echo(endpoint, timeout_s)
    except TimeoutError:
        return None
