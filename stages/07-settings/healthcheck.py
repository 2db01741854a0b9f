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

A bad setting is one line on stderr naming it, exit code 2, as for the server.
"""

import os
import sys

import zmq

ECHO_BIND = os.environ.get("ECHO_BIND", "tcp://*:5555")


def bad_setting(name, text, expected):
    print(f"bad setting {name}={text!r}: expected {expected}", file=sys.stderr)
    sys.exit(2)


def timeout_ms():
    text = os.environ.get("HEALTHCHECK_TIMEOUT_MS", "500")
    if not (text.isascii() and text.isdigit() and int(text) >= 1):
        bad_setting("HEALTHCHECK_TIMEOUT_MS", text, "whole milliseconds, 1 or more")
    return int(text)


def local_endpoint(bind):
    """tcp://*:5555 or tcp://0.0.0.0:5555 -> tcp://127.0.0.1:5555; others as given."""
    scheme, _, address = bind.partition("://")
    host, _, port = address.rpartition(":")
    if scheme != "tcp" or not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        bad_setting("ECHO_BIND", bind, "tcp://HOST:PORT with PORT 1-65535")
    return f"tcp://{'127.0.0.1' if host in ('*', '0.0.0.0') else host}:{port}"


TIMEOUT_MS = timeout_ms()


def connection_events(monitor):
    """The events so far: each monitor message starts with its event's number,
    16 bits (zmq.utils.monitor would do it too, but imports asyncio: a probe's
    start-up would take twice as long)."""
    events = set()
    while monitor.poll(0):
        events.add(int.from_bytes(monitor.recv_multipart()[0][:2], sys.byteorder))
    return events


def main():
    endpoint = local_endpoint(ECHO_BIND)
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
