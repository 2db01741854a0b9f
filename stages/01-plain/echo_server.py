"""Stage 01: a plain ZeroMQ echo service.

A ROUTER socket answers every multipart message with the same frames, sent
back to the peer that sent them. There is no exception handling, on purpose:
this is crash-only software. Kubernetes runs three replicas and restarts one
that dies, so "crash and be restarted" is the error handling — a bad setting
included: it crashes at start-up, and the restarts show it.

Configuration comes from the environment only:
  ECHO_BIND        the ZeroMQ endpoint to bind (default tcp://*:5555)
"""

import os

import zmq

import workshop_faults  # the workshop's fault switch and slow start, not the lesson

ECHO_BIND = os.environ.get("ECHO_BIND", "tcp://*:5555")


def echo_waiting(router):
    """Echo every message already queued, so one poll serves a whole burst."""
    while True:
        try:
            frames = router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        workshop_faults.obey(frames)
        # frames[0] is the sender's identity: ROUTER routes the reply by it.
        router.send_multipart(frames)


def main():
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(ECHO_BIND)
    print(f"echo server listening on {ECHO_BIND}", flush=True)
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    while True:
        poller.poll()
        echo_waiting(router)


if __name__ == "__main__":
    main()
