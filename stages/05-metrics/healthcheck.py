"""Liveness check: is this replica's echo loop still answering?

Kubernetes runs it inside the container (an exec probe). It connects to the
local service, sends one probe message and exits 0 if the echo comes back
within HEALTHCHECK_TIMEOUT_MS (default 500), else 1 with a one-line reason on
stderr. It never hangs: a bounded poll, and LINGER 0 so closing never waits.

It checks this process only, never a dependency: if a database were down,
restarting every replica would not bring it back, only add a restart storm.
"""

import os
import sys

import zmq

TIMEOUT_MS = int(os.environ.get("HEALTHCHECK_TIMEOUT_MS", "500"))
ECHO_BIND = os.environ.get("ECHO_BIND", "tcp://*:5555")


def local_endpoint(bind):
    """tcp://*:5555 or tcp://0.0.0.0:5555 -> tcp://127.0.0.1:5555; others as given."""
    scheme, _, address = bind.partition("://")
    host, _, port = address.rpartition(":")
    if host in ("*", "0.0.0.0"):
        host = "127.0.0.1"
    return f"{scheme}://{host}:{port}"


def main():
    endpoint = local_endpoint(ECHO_BIND)
    probe = b"healthcheck-%d" % os.getpid()
    context = zmq.Context()
    client = context.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    try:
        client.connect(endpoint)
        client.send(probe, zmq.NOBLOCK)
        if client.poll(TIMEOUT_MS) and client.recv() == probe:
            return 0
        print(f"unhealthy: no echo from {endpoint} within {TIMEOUT_MS} ms", file=sys.stderr)
        return 1
    finally:
        client.close()
        context.term()


if __name__ == "__main__":
    sys.exit(main())
