"""Liveness check: is this replica's echo loop still answering?

Kubernetes runs it inside the container (an exec probe). It connects to the
local service, sends one probe message and exits 0 if the echo comes back
within HEALTHCHECK_TIMEOUT_MS (default 500), else 1 with a one-line reason on
stderr. It never hangs: a bounded poll, and LINGER 0 so closing never waits.

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
from zmq.utils.monitor import recv_monitor_message

ECHO_BIND = os.environ.get("ECHO_BIND", "tcp://*:5555")


def bad_setting(name, text, allowed):
    """One line naming the variable, exit code 2, as echo_server.py does."""
    print(f"bad setting {name}={text!r}: expected {allowed}", file=sys.stderr)
    sys.exit(2)


def timeout_ms():
    text = os.environ.get("HEALTHCHECK_TIMEOUT_MS", "500")
    if not text.isdigit() or int(text) < 1:
        bad_setting("HEALTHCHECK_TIMEOUT_MS", text, "whole milliseconds, 1 or more")
    return int(text)


def local_endpoint(bind):
    """tcp://*:5555 or tcp://0.0.0.0:5555 -> tcp://127.0.0.1:5555; others as given."""
    scheme, _, address = bind.partition("://")
    host, _, port = address.rpartition(":")
    if scheme != "tcp" or not port.isdigit() or not 1 <= int(port) <= 65535:
        bad_setting("ECHO_BIND", bind, "tcp://HOST:PORT with PORT 1-65535")
    if host in ("*", "0.0.0.0"):
        host = "127.0.0.1"
    return f"{scheme}://{host}:{port}"


def connection_events(monitor):
    events = set()
    while monitor.poll(0):
        events.add(recv_monitor_message(monitor)["event"])
    return events


def main():
    timeout = timeout_ms()
    endpoint = local_endpoint(ECHO_BIND)
    probe = b"healthcheck-%d" % os.getpid()
    context = zmq.Context()
    client = context.socket(zmq.DEALER)
    client.setsockopt(zmq.LINGER, 0)
    monitor = client.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_CONNECT_RETRIED)
    try:
        client.connect(endpoint)
        client.send(probe, zmq.NOBLOCK)
        if client.poll(timeout) and client.recv() == probe:
            return 0
        events = connection_events(monitor)
        loop_is_stuck = zmq.EVENT_HANDSHAKE_SUCCEEDED in events  # libzmq took us, the loop did not answer
        nothing_listens = zmq.EVENT_CONNECT_RETRIED in events  # the connection was refused
        if loop_is_stuck or nothing_listens:
            print(f"unhealthy: no echo from {endpoint} within {timeout} ms", file=sys.stderr)
            return 1
        print(f"full: {endpoint} did not take the ZeroMQ handshake; alive", file=sys.stderr)
        return 0
    finally:
        client.disable_monitor()
        monitor.close()
        client.close()
        context.term()


if __name__ == "__main__":
    sys.exit(main())
