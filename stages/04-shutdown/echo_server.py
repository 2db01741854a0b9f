"""Stage 04: the echo service, shutting down gracefully on SIGTERM.

A ROUTER socket echoes every multipart message back to its sender. Still
crash-only, but no crash goes unrecorded: whatever ends the process (a bad
setting too) becomes ONE log record with its traceback, then exit code 1.
Every record is one JSON line on stdout, which Kubernetes collects. SIGTERM
(and Ctrl-C) drain the requests still coming, then exit 0.

Configuration comes from the environment only:
  ECHO_BIND        the ZeroMQ endpoint to bind (default tcp://*:5555)
  LOG_LEVEL        DEBUG (a record per echo), INFO (default), WARNING, ...
  LOG_SYSLOG       HOST:PORT of a syslog receiver (UDP) to send every record to
  DRAIN_QUIET_MS   after SIGTERM, stop once no request came for this long (500)
  DRAIN_TIMEOUT_S  after SIGTERM, stop at the latest after this long (5)
"""

import os
import signal


def signal_pipe():
    """The self-pipe trick: on SIGTERM or SIGINT, Python writes the signal's
    number into a pipe; the poll loop watches the pipe's other end.

    A signal can arrive at any moment, also while libzmq is inside zmq_poll
    but not in the poll() system call; then nothing interrupts the wait. A
    byte in a pipe the poller watches cannot be missed.
    """
    readable, writable = os.pipe()
    os.set_blocking(writable, False)  # a signal handler must never block
    signal.set_wakeup_fd(writable)
    for signum in (signal.SIGTERM, signal.SIGINT):
        # The handler does nothing: it replaces the default action (die at
        # once, or KeyboardInterrupt) and the loop does the work.
        signal.signal(signum, lambda signum, frame: None)
    return readable


# First, before anything slow (so the imports come after it, and a slow
# start): as a container's PID 1, Python ignores a SIGTERM that comes before
# its handler, and the pod then waits for SIGKILL at the end of its grace period.
WAKEUP = signal_pipe()

import json
import socket
import sys
import time

import logbook
import zmq

import workshop_faults  # the workshop's fault switch and slow start, not the lesson

ECHO_BIND = os.environ.get("ECHO_BIND", "tcp://*:5555")
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOG_SYSLOG = os.environ.get("LOG_SYSLOG", "")
DRAIN_QUIET_MS = os.environ.get("DRAIN_QUIET_MS", "500")
DRAIN_TIMEOUT_S = os.environ.get("DRAIN_TIMEOUT_S", "5")
LINGER_MS = 1000  # on close, how long queued replies may take to flush
# Under a flood the socket is never empty: echo at most this many messages
# before the loop looks at its wake-up pipe again, so SIGTERM is seen in time.
MAX_BATCH = 100

log = logbook.Logger("echo")


def json_record(record, handler):
    """One record, one line: json.dumps escapes the newlines of a traceback."""
    fields = {
        "time": record.time.isoformat(timespec="milliseconds") + "Z",  # logbook: UTC
        "level": record.level_name,
        "logger": record.channel,
        "message": record.message,
    }
    if record.exc_info:
        fields["exception"] = record.formatted_exception
    return json.dumps(fields)


class SyslogHandler(logbook.Handler):
    """Ship each record to a syslog receiver as ONE UDP datagram (RFC 5424),
    so a traceback stays one record there too (logbook's own SyslogHandler
    sends a record's lines one by one). UDP never blocks the loop when the
    receiver is slow or down; the price is that a lost datagram is a lost record."""

    SEVERITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "NOTICE": 5, "INFO": 6, "DEBUG": 7}

    def __init__(self, host_port, level):
        super().__init__(level=level, bubble=True)  # and on to stdout
        host, _, port = host_port.rpartition(":")
        # Resolved once: a name resolved per record would put DNS lookups on the echo loop.
        self.address = socket.getaddrinfo(host, int(port), socket.AF_INET, socket.SOCK_DGRAM)[0][4]
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.hostname = socket.gethostname()
        self.formatter = json_record

    def emit(self, record):
        priority = 8 + self.SEVERITY.get(record.level_name, 4)  # facility 1: user-level
        header = f"<{priority}>1 {record.time.isoformat()}Z {self.hostname} echo {record.process} - - "
        self.socket.sendto((header + self.format(record)).encode(), self.address)


def echo_waiting(router):
    """Echo the messages already queued, up to MAX_BATCH, so one poll serves a
    whole burst and no flood keeps the loop from its wake-up pipe. Return how
    many were echoed."""
    for echoed in range(MAX_BATCH):
        try:
            frames = router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return echoed
        log.debug("echo {} frames", len(frames))
        workshop_faults.obey(frames)
        # frames[0] is the sender's identity: ROUTER routes the reply by it.
        router.send_multipart(frames)
    return MAX_BATCH


def serve(router):
    """Echo until SIGTERM or SIGINT; return the signal's name."""
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    poller.register(WAKEUP, zmq.POLLIN)
    while True:
        ready = dict(poller.poll())
        if router in ready:
            echo_waiting(router)
        if WAKEUP in ready:
            return signal.Signals(os.read(WAKEUP, 1)[0]).name


def drain(router, quiet_ms, timeout_s):
    """Keep answering after SIGTERM: Kubernetes removes the endpoint at the
    same time as it signals us, so requests still arrive for a moment. Stop
    once none came for `quiet_ms`, or after `timeout_s`. Return how many
    requests were answered."""
    deadline = time.monotonic() + timeout_s
    drained = 0
    while (left_ms := (deadline - time.monotonic()) * 1000) > 0:
        if not router.poll(int(min(quiet_ms, left_ms))):
            break
        drained += echo_waiting(router)
    return drained


def run(stdout):
    # The logger's own level makes a disabled log.debug() nearly free.
    log.level = stdout.level = logbook.lookup_level(LOG_LEVEL.upper())
    if LOG_SYSLOG:
        SyslogHandler(LOG_SYSLOG, level=log.level).push_application()
    quiet_ms, timeout_s = int(DRAIN_QUIET_MS), float(DRAIN_TIMEOUT_S)  # a bad one crashes now, not at SIGTERM
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(ECHO_BIND)
    log.info("echo server listening on {}", ECHO_BIND)
    signal_name = serve(router)
    log.info("{} received, draining", signal_name)
    drained = drain(router, quiet_ms, timeout_s)
    # Close with LINGER, so the replies still queued are flushed, then end the
    # context. Never unbind first: in libzmq, unbinding a ROUTER's endpoint
    # also drops the peers connected through it, and their replies with them.
    router.close(linger=LINGER_MS)
    context.term()
    log.info("drained {} requests after {}", drained, signal_name)


def main():
    """Crash-only, and every crash recorded: any exception is logged once, with
    its traceback, then the process exits 1 for Kubernetes to restart it."""
    stdout = logbook.StreamHandler(sys.stdout)  # every record, one JSON line, before the level is known
    stdout.formatter = json_record
    stdout.push_application()
    try:
        run(stdout)
    except Exception:
        log.exception("echo server crashed")
        return 1
    log.info("echo server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
