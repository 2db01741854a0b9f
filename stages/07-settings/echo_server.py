"""Stage 07: the echo service, every setting checked at start-up.

A ROUTER socket echoes every multipart message back to its sender. Still
crash-only, but no crash goes unrecorded: whatever ends the process (a bad
setting too) becomes ONE log record with its traceback, then exit code 1.
Every record is one JSON line on stdout, which Kubernetes collects. SIGTERM
(and Ctrl-C) drain the requests still coming, then exit 0. No client can
take the replica down: what one peer may send, queue and hold is bounded,
and so are the peers and /metrics' clients (README: the limits and the bound).
A bad setting stops start-up with one record naming it, exit code 2.

Configuration comes from the environment only:
  ECHO_BIND        the ZeroMQ endpoint to bind (default tcp://*:5555)
  LOG_LEVEL        DEBUG (a record per echo), INFO (default), WARNING, ...
  LOG_SYSLOG       HOST:PORT of a syslog receiver (UDP) to send every record to
  DRAIN_QUIET_MS   after SIGTERM, stop once no request came for this long (500)
  DRAIN_TIMEOUT_S  after SIGTERM, stop at the latest after this long (5)
  METRICS_PORT     the HTTP port of /metrics, for Prometheus (8000)
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
import resource
import socket
import sys
import threading
import time
from http.server import ThreadingHTTPServer

import logbook
import prometheus_client
import zmq
from prometheus_client import Counter, Gauge, Histogram

import workshop_faults  # the workshop's fault switch and slow start, not the lesson

LINGER_MS = 1000  # on close, how long queued replies may take to flush
# Under a flood the socket is never empty: echo at most this many messages
# before the loop looks at its wake-up pipe again, so SIGTERM is seen in time.
MAX_BATCH = 100

# One client must not exhaust the replica's memory. libzmq drops a peer that
# sends a frame over MAX_MESSAGE_BYTES before buffering it (MAXMSGSIZE), and
# queues whole messages per peer up to its high-water marks: past
# QUEUED_REQUESTS it stops reading the peer (TCP pushes back, nothing is lost);
# past QUEUED_REPLIES it drops replies to it, and the loop counts them. (Its
# sending side hears that replies have left only every half mark, so a client
# may keep up to QUEUED_REPLIES / 2 requests unanswered.) libzmq has no limit
# on frames per message: the loop drops a message with too many frames or
# bytes instead of echoing it.
MAX_MESSAGE_BYTES = 1024
MAX_FRAMES = 8  # the client's: a delimiter and a few parts (ROUTER's identity comes on top)
QUEUED_REQUESTS = 8
QUEUED_REPLIES = 200
SOCKET_BUFFER_BYTES = 8192  # the kernel's buffers per connection, each way
# Every connection holds a file descriptor, so a cap on descriptors caps the
# peers, and with them the memory. Kubernetes has no setting for a
# container's limit and runtimes allow a million, so the process lowers its
# own; OWN_FILES are libzmq's and stdio's. Connections beyond the cap wait in
# the kernel's accept queue (BACKLOG) until a peer leaves.
MAX_CONNECTIONS = 250
OWN_FILES = 32
BACKLOG = 4096
# A peer that holds a descriptor and says nothing must not hold it for ever:
# libzmq cuts a connection whose ZeroMQ handshake is not done in HANDSHAKE_MS,
# and one that has sent nothing HEARTBEAT_TIMEOUT_MS after a heartbeat (PING,
# every HEARTBEAT_MS; libzmq clients answer it by themselves).
HANDSHAKE_MS = 2000
HEARTBEAT_MS = 5000
HEARTBEAT_TIMEOUT_MS = 5000
# /metrics serves Prometheus, one scrape at a time: a few connections at once,
# a time-out per read or write, and a cap on what a request may send, so slow,
# many or huge HTTP requests cannot pile up threads and memory. Connections
# beyond are closed; Prometheus tries again next time.
METRICS_CONNECTIONS = 4
METRICS_TIMEOUT_S = 5
METRICS_REQUEST_BYTES = 8192

log = logbook.Logger("echo")

REQUESTS = Counter("echo_requests_total", "Messages received and echoed back.")
LATENCY = Histogram(
    "echo_request_duration_seconds",
    "Time from receiving a message to queueing its echo.",
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
DRAINING = Gauge("echo_draining", "1 while draining after SIGTERM, else 0.")
DROPPED = Counter(
    "echo_dropped_messages_total",
    "Messages dropped: requests over the limits (read, never echoed), replies to a peer whose "
    "queue is full or who has gone.",
    ["direction", "reason"],
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


def stop_at_start(message):
    """A bad setting: one ERROR record naming it, then exit code 2, as for a
    bad command line — not a traceback, not a server quietly listening
    somewhere else. (Logging may not be set up yet: a handler of its own.)"""
    if sys.stdout is None:  # started with stdout closed: say it where we can
        print(message, file=sys.stderr, flush=True)
        sys.exit(2)
    handler = logbook.StreamHandler(sys.stdout, level="ERROR")
    handler.formatter = json_record
    with handler.applicationbound():
        log.error(message)
    sys.exit(2)


def setting(name, default, convert, expected):
    """One environment variable, converted and checked now, at start-up."""
    text = os.environ.get(name, default)
    try:
        return convert(text)
    except (ValueError, LookupError):
        stop_at_start(f"bad setting {name}={text!r}: expected {expected}")


def whole_number(text, low, high):
    """Digits only (int() would also take " +5_00"), from low to high."""
    if not (text.isascii() and text.isdigit() and low <= int(text) <= high):
        raise ValueError(text)
    return int(text)


def seconds(text):
    """A plain decimal, up to an hour: no sign, exponent, nan or inf."""
    if not (text.isascii() and text.replace(".", "", 1).isdigit() and float(text) <= 3600):
        raise ValueError(text)
    return float(text)


def tcp_endpoint(text):
    """libzmq would take tcp://*:99999 and listen on another port: refuse it."""
    scheme, _, address = text.partition("://")
    if scheme != "tcp":
        raise ValueError(text)
    whole_number(address.rpartition(":")[2], 1, 65535)
    return text


def host_and_port(text):
    """HOST:PORT, or nothing (no syslog)."""
    host, _, port = text.rpartition(":")
    if text and not (host and whole_number(port, 1, 65535)):
        raise ValueError(text)
    return text


ECHO_BIND = setting("ECHO_BIND", "tcp://*:5555", tcp_endpoint, "tcp://HOST:PORT with PORT 1-65535")
LOG_LEVEL = setting("LOG_LEVEL", "INFO", lambda text: logbook.lookup_level(text.upper()),
                    "DEBUG, INFO, NOTICE, WARNING, ERROR or CRITICAL")
LOG_SYSLOG = setting("LOG_SYSLOG", "", host_and_port, "HOST:PORT of a syslog receiver, PORT 1-65535")
DRAIN_QUIET_MS = setting("DRAIN_QUIET_MS", "500", lambda text: whole_number(text, 1, 3_600_000),
                         "whole milliseconds, 1 to 3600000")
DRAIN_TIMEOUT_S = setting("DRAIN_TIMEOUT_S", "5", seconds, "seconds, 0 to 3600")
METRICS_PORT = setting("METRICS_PORT", "8000", lambda text: whole_number(text, 1, 65535), "a port, 1-65535")


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


def limit_connections():
    """Lower this process's open-file limit to MAX_CONNECTIONS + OWN_FILES."""
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
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a reply that cannot be queued raises: it is counted
    router.setsockopt(zmq.RCVBUF, SOCKET_BUFFER_BYTES)
    router.setsockopt(zmq.SNDBUF, SOCKET_BUFFER_BYTES)
    router.setsockopt(zmq.BACKLOG, BACKLOG)
    router.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)
    router.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_MS)
    router.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    return router


class CappedReader:
    """An HTTP request's bytes, METRICS_REQUEST_BYTES at most: past those it
    reads as ended (http.server alone takes 100 header lines of 64 KiB)."""

    def __init__(self, rfile):
        self.rfile, self.left = rfile, METRICS_REQUEST_BYTES

    def readline(self, size=-1):
        line = self.rfile.readline(self.left if size < 0 else min(size, self.left)) if self.left > 0 else b""
        self.left -= len(line)
        return line

    def close(self):
        self.rfile.close()


class MetricsHandler(prometheus_client.MetricsHandler):
    timeout = METRICS_TIMEOUT_S  # per read or write: a stalled client is cut off

    def setup(self):
        super().setup()
        self.rfile = CappedReader(self.rfile)

    def parse_request(self):
        if super().parse_request() and self.rfile.left > 0:
            return True
        if self.rfile.left <= 0:
            self.send_error(431, f"a request is {METRICS_REQUEST_BYTES} bytes at most")
        return False


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
    many were read."""
    for echoed in range(MAX_BATCH):
        try:
            frames = receive_within_limits(router)
        except zmq.Again:
            return echoed
        if frames is None:
            DROPPED.labels("request", "over_limits").inc()
            continue
        log.debug("echo {} frames", len(frames))
        started = time.perf_counter()
        workshop_faults.obey(frames)
        try:
            # frames[0] is the sender's identity: ROUTER routes the reply by it.
            router.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:  # its reply queue is full: it does not read
            DROPPED.labels("reply", "queue_full").inc()
            continue
        except zmq.ZMQError as error:
            if error.errno != zmq.EHOSTUNREACH:
                raise
            DROPPED.labels("reply", "peer_gone").inc()  # it left before its reply
            continue
        LATENCY.observe(time.perf_counter() - started)
        REQUESTS.inc()
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
    requests were read."""
    deadline = time.monotonic() + timeout_s
    drained = 0
    while (left_ms := (deadline - time.monotonic()) * 1000) > 0:
        if not router.poll(int(min(quiet_ms, left_ms))):
            break
        drained += echo_waiting(router)
    return drained


def run(stdout):
    if sys.stdout is None:
        stop_at_start("stdout is closed: the echo server logs there")
    # The logger's own level makes a disabled log.debug() nearly free.
    log.level = stdout.level = LOG_LEVEL
    # Some settings only using them can check: a name that does not resolve,
    # an address that is not this host's, a port in use or privileged.
    if LOG_SYSLOG:
        try:
            SyslogHandler(LOG_SYSLOG, level=log.level).push_application()
        except OSError as error:
            stop_at_start(f"bad setting LOG_SYSLOG={LOG_SYSLOG!r}: expected a HOST that resolves ({error})")
    limit_connections()
    try:
        metrics = MetricsServer(METRICS_PORT)
    except OSError as error:
        stop_at_start(f"bad setting METRICS_PORT={METRICS_PORT!r}: expected a port this process can bind "
                      f"({error})")
    threading.Thread(target=metrics.serve_forever, daemon=True).start()
    context = zmq.Context()
    router = bounded_router(context)
    try:
        router.bind(ECHO_BIND)
    except zmq.ZMQError as error:
        stop_at_start(f"bad setting ECHO_BIND={ECHO_BIND!r}: expected an address and port this host can "
                      f"bind ({error})")
    log.info("echo server listening on {}", ECHO_BIND)
    signal_name = serve(router)
    log.info("{} received, draining", signal_name)
    DRAINING.set(1)
    drained = drain(router, DRAIN_QUIET_MS, DRAIN_TIMEOUT_S)
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
