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
