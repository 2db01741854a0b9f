"""The smallest ZeroMQ client: one echo on a throw-away socket."""

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
