"""Stage 05: the echo service, with Prometheus metrics on /metrics.

A ROUTER socket answers every multipart message with the same frames, sent back
to the peer that sent them. There is no exception handling on purpose: this is
crash-only software. Kubernetes runs three replicas and restarts any that dies,
so "crash and be restarted" is the error handling.

Configuration comes only from the environment:
  ECHO_BIND           ZeroMQ endpoint to bind (default tcp://*:5555)
  ECHO_STARTUP_DELAY  seconds to sleep before binding: simulates slow start-up
  ECHO_FAULTS=1       obey fault-injection messages (see inject_fault)
  LOG_LEVEL           DEBUG, INFO (default), WARNING, ...
  LOG_SYSLOG          host:port of a syslog receiver (UDP) to ship records to
  DRAIN_QUIET_MS      after SIGTERM, stop once no request came for this long (500)
  DRAIN_TIMEOUT_S     after SIGTERM, stop at the latest after this long (5)
  METRICS_PORT        HTTP port of /metrics for Prometheus (8000)

Every log record is one JSON line on stdout, which Kubernetes collects.
"""

import json
import os
import signal
import socket
import sys
import time

import logbook
import zmq
from prometheus_client import Counter, Gauge, Histogram, start_http_server
from zmq.utils.monitor import recv_monitor_message

ECHO_BIND = os.environ.get("ECHO_BIND", "tcp://*:5555")
STARTUP_DELAY_S = float(os.environ.get("ECHO_STARTUP_DELAY", "0"))
FAULTS_ENABLED = os.environ.get("ECHO_FAULTS") == "1"
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO").upper()
LOG_SYSLOG = os.environ.get("LOG_SYSLOG", "")
DRAIN_QUIET_MS = int(os.environ.get("DRAIN_QUIET_MS", "500"))
DRAIN_TIMEOUT_S = float(os.environ.get("DRAIN_TIMEOUT_S", "5"))
LINGER_MS = 1000  # on close, how long queued replies may take to flush
METRICS_PORT = int(os.environ.get("METRICS_PORT", "8000"))

# libzmq drops the connection of a peer that sends a bigger frame before it is
# ever buffered, so one client cannot exhaust the replica's memory.
MAX_MESSAGE_BYTES = 1024 * 1024

# The logger's own level makes a disabled log.debug() nearly free; without it
# logbook builds a full record per call only for the handlers to drop it.
log = logbook.Logger("echo", level=logbook.lookup_level(LOG_LEVEL))

REQUESTS = Counter("echo_requests_total", "Messages received and echoed back.")
LATENCY = Histogram(
    "echo_request_duration_seconds",
    "Time from receiving a message to queueing its echo.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
DRAINING = Gauge("echo_draining", "1 while draining after SIGTERM, else 0.")
# libzmq drops bad peers itself; its socket monitor tells us that it happened.
HANDSHAKE_FAILURES = Counter(
    "echo_handshake_failures_total",
    "Connections that never became ZeroMQ peers: garbage bytes, scans, bare TCP probes.",
)
DISCONNECTS = Counter(
    "echo_disconnects_total",
    "Peers gone: closed by the client, or dropped for a frame over the size limit.",
)


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
    """Ship each record to a syslog receiver as ONE UDP datagram (RFC 5424).

    A multi-line traceback stays one record at the aggregator. (logbook's own
    SyslogHandler splits records on newlines and forgets a custom formatter
    after the first record.) UDP never blocks the loop when the receiver is
    slow or down; the price is that a lost datagram is a lost record.
    """

    SEVERITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "NOTICE": 5, "INFO": 6, "DEBUG": 7}
    FACILITY_USER = 1

    def __init__(self, address, level):
        super().__init__(level=level, bubble=True)
        host, port = address.rsplit(":", 1)
        self.address = (host, int(port))
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.hostname = socket.gethostname()

    def emit(self, record):
        priority = self.FACILITY_USER * 8 + self.SEVERITY.get(record.level_name, 4)
        header = f"<{priority}>1 {record.time.isoformat()}Z {self.hostname} echo {record.process} - - "
        self.socket.sendto((header + self.format(record)).encode(), self.address)


def setup_logging():
    """Send every record of the whole application to stdout (and syslog)."""
    handlers = [logbook.StreamHandler(sys.stdout, level=LOG_LEVEL, bubble=True)]
    if LOG_SYSLOG:
        handlers.append(SyslogHandler(LOG_SYSLOG, level=LOG_LEVEL))
    for handler in handlers:
        handler.formatter = json_record
        handler.push_application()


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
    """Echo every message already queued, so one poll serves a whole burst.
    Return how many were echoed."""
    echoed = 0
    while True:
        try:
            frames = router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return echoed
        log.debug("echo {} frames", len(frames))  # DEBUG only: costly per request
        started = time.perf_counter()
        if FAULTS_ENABLED:
            inject_fault(frames)
        # frames[0] is the sender's identity: ROUTER routes the reply by it.
        router.send_multipart(frames)
        LATENCY.observe(time.perf_counter() - started)
        REQUESTS.inc()
        echoed += 1


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


def count_peer_events(monitor):
    """Count the monitor's events: bad peers that libzmq dropped on its own."""
    while monitor.poll(0):
        event = recv_monitor_message(monitor)["event"]
        if event == zmq.EVENT_DISCONNECTED:
            DISCONNECTS.inc()
        else:
            HANDSHAKE_FAILURES.inc()


def serve(router):
    """Echo until SIGTERM or SIGINT; return the signal's name."""
    wakeup = signal_pipe()
    monitor = router.get_monitor_socket(
        zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    )
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    poller.register(wakeup, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    while True:
        ready = dict(poller.poll())
        if router in ready:
            echo_waiting(router)
        if monitor in ready:
            count_peer_events(monitor)
        if wakeup in ready:
            router.disable_monitor()
            monitor.close()  # an open socket would block context.term()
            return signal.Signals(os.read(wakeup, 1)[0]).name


def drain(router):
    """Keep answering after SIGTERM: Kubernetes removes the endpoint at the
    same time as it signals us, so requests still arrive for a moment. Stop
    once none came for DRAIN_QUIET_MS, or at DRAIN_TIMEOUT_S. Return how many
    requests were answered."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    drained = 0
    while (left_ms := (deadline - time.monotonic()) * 1000) > 0:
        if not router.poll(int(min(DRAIN_QUIET_MS, left_ms))):
            break
        drained += echo_waiting(router)
    return drained


def run():
    start_http_server(METRICS_PORT)  # /metrics, served from a daemon thread
    time.sleep(STARTUP_DELAY_S)
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    router.bind(ECHO_BIND)
    log.info("echo server listening on {}", ECHO_BIND)
    signal_name = serve(router)
    log.info("{} received, draining", signal_name)
    DRAINING.set(1)
    drained = drain(router)
    # Close with LINGER, so the replies still queued are flushed, then end the
    # context. Never unbind first: in libzmq, unbinding a ROUTER's endpoint
    # also drops the peers connected through it, and their replies with them.
    router.close(linger=LINGER_MS)
    context.term()
    log.info("drained {} requests after {}", drained, signal_name)


def main():
    """Still crash-only, but no crash goes unrecorded: any unhandled exception
    becomes exactly one ERROR record with its traceback, then a non-zero exit."""
    setup_logging()
    try:
        run()
    except Exception:
        log.exception("echo server crashed")
        return 1
    log.info("echo server stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
