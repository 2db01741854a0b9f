"""Stage 03: the echo service, with probes (healthcheck.py, k8s/deployment.yaml).

A ROUTER socket echoes every multipart message back to its sender. Still
crash-only, but no crash goes unrecorded: whatever ends the process (a bad
setting too) becomes ONE log record with its traceback, then exit code 1.
Every record is one JSON line on stdout, which Kubernetes collects.

Configuration comes from the environment only:
  ECHO_BIND        the ZeroMQ endpoint to bind (default tcp://*:5555)
  LOG_LEVEL        DEBUG (a record per echo), INFO (default), WARNING, ...
  LOG_SYSLOG       HOST:PORT of a syslog receiver (UDP) to send every record to
"""

import json
import os
import socket
import sys

import logbook
import zmq

import workshop_faults  # the workshop's fault switch and slow start, not the lesson

ECHO_BIND = os.environ.get("ECHO_BIND", "tcp://*:5555")
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOG_SYSLOG = os.environ.get("LOG_SYSLOG", "")

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
    """Echo every message already queued, so one poll serves a whole burst."""
    while True:
        try:
            frames = router.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        log.debug("echo {} frames", len(frames))
        workshop_faults.obey(frames)
        # frames[0] is the sender's identity: ROUTER routes the reply by it.
        router.send_multipart(frames)


def run(stdout):
    # The logger's own level makes a disabled log.debug() nearly free.
    log.level = stdout.level = logbook.lookup_level(LOG_LEVEL.upper())
    if LOG_SYSLOG:
        SyslogHandler(LOG_SYSLOG, level=log.level).push_application()
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(ECHO_BIND)
    log.info("echo server listening on {}", ECHO_BIND)
    poller = zmq.Poller()
    poller.register(router, zmq.POLLIN)
    while True:
        poller.poll()
        echo_waiting(router)


def main():
    """Crash-only, and every crash recorded: any exception is logged once, with
    its traceback, then the process exits 1 for Kubernetes to restart it."""
    stdout = logbook.StreamHandler(sys.stdout)  # every record, one JSON line, before the level is known
    stdout.formatter = json_record
    stdout.push_application()
    try:
        run(stdout)
    except KeyboardInterrupt:  # Ctrl-C by hand is a clean exit
        log.info("echo server stopped")
        return 0
    except Exception:
        log.exception("echo server crashed")
        return 1


if __name__ == "__main__":
    sys.exit(main())
