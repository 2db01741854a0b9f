"""Stage 05: the echo service, with Prometheus metrics on /metrics.

A ROUTER socket answers every multipart message with the same frames, sent back
to the peer that sent them. There is no exception handling on purpose: this is
crash-only software. Kubernetes runs three replicas and restarts any that dies,
so "crash and be restarted" is the error handling.

Configuration comes only from the environment; a bad value stops start-up with
one record that names it (exit code 2):
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
import resource
import signal
import socket
import sys
import threading
import time
from http.server import ThreadingHTTPServer

import logbook
import prometheus_client
import zmq
from prometheus_client import Counter, Gauge, Histogram
from zmq.utils.monitor import recv_monitor_message


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


def stop_at_start(message):
    """Before logging is set up, still log one JSON ERROR record, then exit 2."""
    if sys.stdout is None:  # started with stdout closed: say it where we can
        print(message, file=sys.stderr, flush=True)
        sys.exit(2)
    handler = logbook.StreamHandler(sys.stdout, level="ERROR")
    handler.formatter = json_record
    with handler.applicationbound():
        logbook.Logger("echo").error(message)
    sys.exit(2)


def setting(name, default, convert, allowed):
    """One environment variable, converted. A bad value ends the process with
    one line naming the variable, its value and what is allowed (exit code 2,
    as for a bad command line), not with a traceback from where it was used."""
    text = os.environ.get(name, default)
    try:
        return convert(text)
    except (ValueError, LookupError, OSError):
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


def port(text):
    return whole_number(text, 1, 65535)


def milliseconds(text):
    return whole_number(text, 1, 3_600_000)


def switch(text):
    if text not in ("0", "1"):
        raise ValueError(text)
    return text == "1"


def log_level(text):
    logbook.lookup_level(text.upper())  # LookupError for an unknown name
    return text.upper()


def syslog_address(text):
    """HOST:PORT, resolved here once: a name resolved per record would put a
    DNS lookup (four, with a Kubernetes search path) on the echo loop."""
    if not text:
        return None
    host, _, port = text.rpartition(":")
    if not host:
        raise ValueError(text)
    return socket.getaddrinfo(host, whole_number(port, 1, 65535), socket.AF_INET, socket.SOCK_DGRAM)[0][4]


# Read and checked on import, before anything binds.
ECHO_BIND = setting("ECHO_BIND", "tcp://*:5555", tcp_endpoint, "tcp://HOST:PORT with PORT 1-65535")
STARTUP_DELAY_S = setting("ECHO_STARTUP_DELAY", "0", seconds, "seconds, 0 to 3600")
FAULTS_ENABLED = setting("ECHO_FAULTS", "0", switch, "0 or 1")
LOG_LEVEL = setting("LOG_LEVEL", "INFO", log_level, "DEBUG, INFO, NOTICE, WARNING, ERROR or CRITICAL")
LOG_SYSLOG = setting("LOG_SYSLOG", "", syslog_address, "HOST:PORT of a syslog receiver, HOST resolvable")
DRAIN_QUIET_MS = setting("DRAIN_QUIET_MS", "500", milliseconds, "whole milliseconds, 1 to 3600000")
DRAIN_TIMEOUT_S = setting("DRAIN_TIMEOUT_S", "5", seconds, "seconds, 0 to 3600")
LINGER_MS = 1000  # on close, how long queued replies may take to flush
METRICS_PORT = setting("METRICS_PORT", "8000", port, "a port, 1-65535")
# /metrics serves Prometheus, one scrape at a time: a few connections at once
# and a time-out per read or write, so slow or many HTTP clients cannot pile
# up threads and memory. Those beyond are closed; Prometheus retries next time.
METRICS_CONNECTIONS = 4
METRICS_TIMEOUT_S = 5
# Under a flood the socket is never empty: echo at most this many messages
# before the loop looks at its wake-up pipe again, so SIGTERM is seen in time.
MAX_BATCH = 100

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
DROPPED = Counter(
    "echo_dropped_messages_total",
    "Messages over the frame or byte limit: read, dropped, never echoed.",
)


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
        self.address = address  # (IP, port): resolved once, at start-up
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.hostname = socket.gethostname()

    def emit(self, record):
        priority = self.FACILITY_USER * 8 + self.SEVERITY.get(record.level_name, 4)
        header = f"<{priority}>1 {record.time.isoformat()}Z {self.hostname} echo {record.process} - - "
        self.socket.sendto((header + self.format(record)).encode(), self.address)


def setup_logging():
    """Send every record of the whole application to stdout (and syslog)."""
    if sys.stdout is None:  # started with stdout closed: every record would fail
        stop_at_start("stdout is closed: the echo server logs there")
    handlers = [logbook.StreamHandler(sys.stdout, level=LOG_LEVEL, bubble=True)]
    if LOG_SYSLOG:
        handlers.append(SyslogHandler(LOG_SYSLOG, level=LOG_LEVEL))
    for handler in handlers:
        handler.formatter = json_record
        handler.push_application()


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


class MetricsHandler(prometheus_client.MetricsHandler):
    timeout = METRICS_TIMEOUT_S  # per read or write: a stalled client is cut off


class MetricsServer(ThreadingHTTPServer):
    """/metrics with at most METRICS_CONNECTIONS clients at once, each in its
    own daemon thread (prometheus_client's start_http_server has no limit)."""

    def __init__(self, port):
        super().__init__(("", port), MetricsHandler)
        self.slots = threading.BoundedSemaphore(METRICS_CONNECTIONS)

    def get_request(self):
        try:
            return super().get_request()
        except OSError:  # out of file descriptors: back off, do not spin
            time.sleep(0.1)
            raise

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: close it, do not queue it
            return
        try:
            super().process_request(request, client_address)  # starts its thread
        except BaseException:  # no thread, so nothing else will free the slot
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


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
    """Echo the messages already queued, up to MAX_BATCH, so one poll serves a
    whole burst and no flood keeps the loop from its wake-up pipe. Return how
    many were echoed."""
    echoed = 0
    for _ in range(MAX_BATCH):
        try:
            frames = receive_within_limits(router)
        except zmq.Again:
            break
        if frames is None:
            DROPPED.inc()
            continue  # over the limits: dropped, never echoed
        log.debug("echo {} frames", len(frames))  # DEBUG only: costly per request
        started = time.perf_counter()
        if FAULTS_ENABLED:
            inject_fault(frames)
        # frames[0] is the sender's identity: ROUTER routes the reply by it.
        router.send_multipart(frames)
        LATENCY.observe(time.perf_counter() - started)
        REQUESTS.inc()
        echoed += 1
    return echoed


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
    """Count the monitor's events: bad peers that libzmq dropped on its own.
    At most MAX_BATCH at a time: connection churn must not hold the loop."""
    for _ in range(MAX_BATCH):
        if not monitor.poll(0):
            return
        event = recv_monitor_message(monitor)["event"]
        if event == zmq.EVENT_DISCONNECTED:
            DISCONNECTS.inc()
        else:
            HANDSHAKE_FAILURES.inc()


def serve(router, wakeup, monitor):
    """Echo until SIGTERM or SIGINT; return the signal's name."""
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
    limit_connections()
    server = MetricsServer(METRICS_PORT)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    time.sleep(STARTUP_DELAY_S)
    context = zmq.Context()
    router = bounded_router(context)
    wakeup = signal_pipe()  # before bind: once peers come, descriptors may run out
    monitor = router.get_monitor_socket(
        zmq.EVENT_DISCONNECTED | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    )
    try:
        router.bind(ECHO_BIND)
    except zmq.ZMQError as error:  # not this host's address, or a port in use
        stop_at_start(f"bad setting ECHO_BIND={ECHO_BIND!r}: expected an address and port this host can bind ({error})")
    log.info("echo server listening on {}", ECHO_BIND)
    signal_name = serve(router, wakeup, monitor)
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
