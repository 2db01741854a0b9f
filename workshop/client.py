"""The smallest ZeroMQ clients: one echo, the first echo of a starting
server, and a fault request."""

import time

import zmq


def echo_once(endpoint, payload=b"ping", timeout_ms=200):
    """True if `endpoint` echoed `payload` within the timeout. The socket is
    thrown away either way, so no late reply is left over for anyone."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(endpoint)
        sock.send(payload)
        return bool(sock.poll(timeout_ms)) and sock.recv() == payload
    finally:
        sock.close()


def echo_frames(endpoint, frames, timeout_s=2.0):
    """One multipart message; its reply's frames, or None if none came in time."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(endpoint)
        sock.send_multipart(frames)
        return sock.recv_multipart() if sock.poll(int(timeout_s * 1000)) else None
    finally:
        sock.close()


def wait_for_first_echo(endpoint, timeout_s=10, still_running=lambda: True):
    """Block until a server that is starting answers its first echo; return
    the seconds waited. One request is sent, once: libzmq keeps retrying the
    connection (every millisecond here) and delivers it as soon as the server
    binds, so the server sees exactly one readiness echo.

    Raises RuntimeError as soon as `still_running()` is false, TimeoutError
    after `timeout_s`."""
    started = time.monotonic()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.setsockopt(zmq.RECONNECT_IVL, 1)
    try:
        sock.connect(endpoint)
        sock.send(b"first echo?")
        while not sock.poll(50):
            if not still_running():
                raise RuntimeError(f"the server for {endpoint} exited before it answered")
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(f"no echo from {endpoint} within {timeout_s} s")
        sock.recv()
        return time.monotonic() - started
    finally:
        sock.close()


def send_fault(endpoint, command):
    """Send a fault request (crash, hang, slow:<ms>) to one replica started with
    ECHO_FAULTS=1. No reply is awaited: a crashed or hung replica never answers;
    LINGER makes sure the message leaves before the socket closes."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 2000
    try:
        sock.connect(endpoint)
        sock.send_multipart([b"__fault__", command.encode()])
    finally:
        sock.close()
