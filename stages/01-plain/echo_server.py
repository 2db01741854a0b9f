"""Stage 01: a plain ZeroMQ echo service.

A ROUTER socket answers every multipart message with the same frames, sent back
to the peer that sent them. There is no exception handling on purpose: this is
crash-only software. Kubernetes runs three replicas and restarts any that dies,
so "crash and be restarted" is the error handling.

Configuration comes only from the environment; a bad value stops start-up with
one line that names it (exit code 2):
  ECHO_BIND           ZeroMQ endpoint to bind (default tcp://*:5555)
  ECHO_STARTUP_DELAY  seconds to sleep before binding: simulates slow start-up
  ECHO_FAULTS=1       obey fault-injection messages (see inject_fault)
"""

import os
import resource
import sys
import time

import zmq


def stop_at_start(message):
    """Say what is wrong in one line and exit with code 2, as for a bad command line."""
    print(message, file=sys.stderr, flush=True)
    sys.exit(2)


def setting(name, default, convert, allowed):
    """One environment variable, converted. A bad value ends the process with
    one line naming the variable, its value and what is allowed (exit code 2,
    as for a bad command line), not with a traceback from where it was used."""
    text = os.environ.get(name, default)
    try:
        return convert(text)
    except ValueError:
        stop_at_start(f"bad setting {name}={text!r}: expected {allowed}")


def whole_number(text, low, high):
    """Digits only (int() would also take " +5_00"), from low to high."""
    if not (text.isascii() and text.isdigit() and low <= int(text) <= high):
        raise ValueError(text)
    return int(text)


def tcp_endpoint(text):
    """libzmq would take tcp://*:99999 and listen on another port: refuse it."""
    scheme, _, address = text.partition("://")
    if scheme != "tcp":
        raise ValueError(text)
    whole_number(address.rpartition(":")[2], 1, 65535)
    return text


def seconds(text):
    """A plain decimal, up to an hour: no sign, exponent, nan or inf."""
    if not (text.isascii() and text.replace(".", "", 1).isdigit() and float(text) <= 3600):
        raise ValueError(text)
    return float(text)


def switch(text):
    if text not in ("0", "1"):
        raise ValueError(text)
    return text == "1"


# Read and checked on import, before anything binds.
ECHO_BIND = setting("ECHO_BIND", "tcp://*:5555", tcp_endpoint, "tcp://HOST:PORT with PORT 1-65535")
STARTUP_DELAY_S = setting("ECHO_STARTUP_DELAY", "0", seconds, "seconds, 0 to 3600")
FAULTS_ENABLED = setting("ECHO_FAULTS", "0", switch, "0 or 1")

# One client must not exhaust the replica's memory. libzmq drops a peer that
# sends a frame over MAX_MESSAGE_BYTES before buffering it (MAXMSGSIZE), and
# queues whole messages per peer up to its high-water marks: past
# QUEUED_REQUESTS it stops reading the peer (TCP pushes back, nothing is lost);
# past QUEUED_REPLIES it drops replies to it. (Its sending side hears that
# replies have left only every half mark, so a client may keep up to
# QUEUED_REPLIES / 2 requests unanswered.) A client that never reads costs no
# more than that. libzmq has no limit on frames per message: the loop drops a
# message with too many frames or bytes instead of echoing it.
MAX_MESSAGE_BYTES = 1024
MAX_FRAMES = 8  # the sender's identity, a delimiter and a few parts
QUEUED_REQUESTS = 8
QUEUED_REPLIES = 200
SOCKET_BUFFER_BYTES = 8192  # the kernel's buffers per connection, each way
# Every connection holds a file descriptor, so a cap on descriptors caps the
# peers, and with them the memory (README: the bound). Kubernetes has no
# setting for a container's limit and runtimes allow a million, so the process
# lowers its own; OWN_FILES are libzmq's and stdio's. Connections beyond the
# cap wait in the kernel's accept queue (BACKLOG) until a peer leaves.
MAX_CONNECTIONS = 250
OWN_FILES = 32
BACKLOG = 4096


def limit_connections():
    """Lower this process's open-file limit to MAX_CONNECTIONS + OWN_FILES
    (it holds 12 to 17 itself: the bound in the README counts all 282)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    soft = MAX_CONNECTIONS + OWN_FILES
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def bounded_router(context):
    """A ROUTER socket with the limits above."""
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)  # no frame is bigger than its message
    router.setsockopt(zmq.RCVHWM, QUEUED_REQUESTS)
    router.setsockopt(zmq.SNDHWM, QUEUED_REPLIES)
    router.setsockopt(zmq.RCVBUF, SOCKET_BUFFER_BYTES)
    router.setsockopt(zmq.SNDBUF, SOCKET_BUFFER_BYTES)
    router.setsockopt(zmq.BACKLOG, BACKLOG)
    return router


def inject_fault(frames):
    """Obey a fault request: [identity, (b"" from REQ,) b"__fault__", command].

    Commands: crash, hang, slow:<ms> (up to a minute); anything else is simply
    echoed. Scenarios use this to crash or freeze one replica on a real
    cluster, where a container's PID 1 cannot be stopped from the inside. Off
    by default.
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
    if command.startswith("slow:") and delay_ms.isdigit() and int(delay_ms) <= 60_000:
        time.sleep(int(delay_ms) / 1000)


def receive_within_limits(router):
    """Receive one message, frame by frame. Return its frames, or None if the
    client sent more than MAX_FRAMES frames or MAX_MESSAGE_BYTES bytes: then
    the rest is read and thrown away frame by frame, so a message of a million
    frames never becomes a list of them. Raise zmq.Again when none waits."""
    frames = [router.recv(zmq.NOBLOCK)]  # the sender's identity, put first by ROUTER
    size = 0
    while router.getsockopt(zmq.RCVMORE):  # the rest of a message is already here
        frame = router.recv()
        size += len(frame)
        if frames is not None and len(frames) <= MAX_FRAMES and size <= MAX_MESSAGE_BYTES:
            frames.append(frame)
        else:
            frames = None
    return frames


def echo_waiting(router):
    """Echo every message already queued, so one poll serves a whole burst."""
    while True:
        try:
            frames = receive_within_limits(router)
        except zmq.Again:
            return
        if frames is None:
            continue  # over the limits: dropped, never echoed
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
    limit_connections()
    time.sleep(STARTUP_DELAY_S)
    context = zmq.Context()
    router = bounded_router(context)
    try:
        router.bind(ECHO_BIND)
    except zmq.ZMQError as error:  # not this host's address, or a port in use
        stop_at_start(f"bad setting ECHO_BIND={ECHO_BIND!r}: expected an address and port this host can bind ({error})")
    print(f"echo server listening on {ECHO_BIND}", flush=True)
    serve(router)


if __name__ == "__main__":
    main()
