"""Stage 01: a plain ZeroMQ echo service.

A ROUTER socket answers every multipart message with the same frames, sent back
to the peer that sent them. There is no exception handling on purpose: this is
crash-only software. Kubernetes runs three replicas and restarts any that dies,
so "crash and be restarted" is the error handling.

Configuration comes only from the environment:
  ECHO_BIND           ZeroMQ endpoint to bind (default tcp://*:5555)
  ECHO_STARTUP_DELAY  seconds to sleep before binding: simulates slow start-up
  ECHO_FAULTS=1       obey fault-injection messages (see inject_fault)
"""

import os
import time

import zmq

ECHO_BIND = os.environ.get("ECHO_BIND", "tcp://*:5555")
STARTUP_DELAY_S = float(os.environ.get("ECHO_STARTUP_DELAY", "0"))
FAULTS_ENABLED = os.environ.get("ECHO_FAULTS") == "1"

# libzmq drops the connection of a peer that sends a bigger frame before it is
# ever buffered, so one client cannot exhaust the replica's memory.
MAX_MESSAGE_BYTES = 1024 * 1024


def inject_fault(frames):
    """Obey a fault request: [identity, (b"" from REQ,) b"__fault__", command].

    Commands: crash, hang, slow:<ms>; anything else is simply echoed. Scenarios
    use this to crash or freeze one replica on a real cluster, where a
    container's PID 1 cannot be stopped from the inside. Off by default.
    """
    body = frames[1:]
    if body and body[0] == b"":  # REQ clients put an empty delimiter first
        body = body[1:]
    if len(body) < 2 or body[0] != b"__fault__":
        return
    command = body[1].decode("ascii", "replace")
    if command == "crash":
        raise RuntimeError("fault injected: crash")
    if command == "hang":
        while True:  # a stuck replica: the process lives, the loop does not
            time.sleep(3600)
    delay_ms = command.removeprefix("slow:")
    if command.startswith("slow:") and delay_ms.isdigit():
        time.sleep(int(delay_ms) / 1000)


def echo_waiting(router):
    """Echo every message already queued, so one poll serves a whole burst."""
    while True:
        try:
            frames = router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        if FAULTS_ENABLED:
            inject_fault(frames)
        # frames[0] is the sender's identity: ROUTER routes the reply by it.
        router.send_multipart(frames)


def serve(router):
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    while True:
        poller.poll()
        echo_waiting(router)


def main():
    time.sleep(STARTUP_DELAY_S)
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    router.bind(ECHO_BIND)
    print(f"echo server listening on {ECHO_BIND}", flush=True)
    serve(router)


if __name__ == "__main__":
    main()
