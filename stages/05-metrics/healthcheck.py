"""Liveness check: is this replica's echo loop still answering?

Kubernetes runs it inside the container (an exec probe). It sends one echo to
the server on loopback and exits 0 if the reply comes back within
HEALTHCHECK_TIMEOUT_MS (default 500), else 1 with the reason on stderr. It
never hangs: a bounded poll, and LINGER 0 so that closing never waits.

It checks this process only, never a dependency: if a database were down,
restarting every replica would not bring it back, only add a restart storm.
"""

import os
import sys

import zmq

ECHO_BIND = os.environ.get("ECHO_BIND", "tcp://*:5555")
TIMEOUT_MS = int(os.environ.get("HEALTHCHECK_TIMEOUT_MS", "500"))


def main():
    # The server binds every interface (tcp://*:PORT); ask it on loopback.
    endpoint = ECHO_BIND.replace("*", "127.0.0.1").replace("0.0.0.0", "127.0.0.1")
    probe = b"healthcheck-%d" % os.getpid()
    context = zmq.Context()
    client = context.socket(zmq.DEALER)
    client.linger = 0
    client.connect(endpoint)
    client.send(probe)
    answered = client.poll(TIMEOUT_MS) and client.recv() == probe
    client.close()
    context.term()
    if not answered:
        print(f"unhealthy: no echo from {endpoint} within {TIMEOUT_MS} ms", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
