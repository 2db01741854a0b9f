"""Liveness check: is this replica's echo loop still answering?

Kubernetes runs it inside the container (an exec probe). It sends one echo to
the server on loopback and exits 0 if the reply comes back within
HEALTHCHECK_TIMEOUT_MS (default 500), else 1 with the reason on stderr. It
never hangs: a bounded poll, and LINGER 0 so that closing never waits.

It checks this process only, never a dependency: if a database were down,
restarting every replica would not bring it back, only add a restart storm.

A replica at its connection ceiling (MAX_CONNECTIONS in echo_server.py) cannot
accept the check's connection: the kernel completes the TCP handshake (or,
once its accept queue is full too, leaves the SYN unanswered), and libzmq never
starts the ZeroMQ one. That replica is alive and serving its peers; restarting
it would throw them all onto the other replicas. So a socket monitor tells the
cases apart, and only two are failures: a ZeroMQ handshake without an echo (the
loop is stuck) and a refused connection (nothing listens). Anything else is
"full, alive" (exit 0). The price: a process frozen whole (SIGSTOP) looks
full, and so does a stuck loop in a replica that is full as well.
"""

import os
import sys

import zmq

ECHO_BIND = os.environ.get("ECHO_BIND", "tcp://*:5555")
TIMEOUT_MS = int(os.environ.get("HEALTHCHECK_TIMEOUT_MS", "500"))


def connection_events(monitor):
    """The events so far: each monitor message starts with its event's number,
    16 bits (zmq.utils.monitor would do it too, but imports asyncio: a probe's
    start-up would take twice as long)."""
    events = set()
    while monitor.poll(0):
        events.add(int.from_bytes(monitor.recv_multipart()[0][:2], sys.byteorder))
    return events


def main():
    # The server binds every interface (tcp://*:PORT); ask it on loopback.
    endpoint = ECHO_BIND.replace("*", "127.0.0.1").replace("0.0.0.0", "127.0.0.1")
    probe = b"healthcheck-%d" % os.getpid()
    context = zmq.Context()
    client = context.socket(zmq.DEALER)
    client.linger = 0
    monitor = client.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_CONNECT_RETRIED)
    client.connect(endpoint)
    client.send(probe)
    answered = client.poll(TIMEOUT_MS) and client.recv() == probe
    events = connection_events(monitor)
    client.disable_monitor()
    monitor.close()
    client.close()
    context.term()
    if answered:
        return 0
    loop_is_stuck = zmq.EVENT_HANDSHAKE_SUCCEEDED in events  # libzmq took us, the loop did not answer
    nothing_listens = zmq.EVENT_CONNECT_RETRIED in events  # the connection was refused
    if loop_is_stuck or nothing_listens:
        print(f"unhealthy: no echo from {endpoint} within {TIMEOUT_MS} ms", file=sys.stderr)
        return 1
    print(f"full: {endpoint} did not take the ZeroMQ handshake; alive", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
