"""Stage 02 on: every record is one JSON line; a crash is one record with the
whole traceback, on stdout and at a real syslog receiver."""

import json
import signal

import pytest

from support import Client, stages_from, wait_for

pytestmark = pytest.mark.parametrize("stage", stages_from("02"))


def json_lines(text):
    return [json.loads(line) for line in text.splitlines()]


def crash(server):
    with Client(server.endpoint) as client:
        client.socket.send_multipart([b"__fault__", b"crash"])
        return server.wait_exit(timeout=10)


def test_every_stdout_line_is_a_json_record(stage, start_server):
    server = start_server(stage, LOG_LEVEL="DEBUG")
    with Client(server.endpoint) as client:
        for i in range(20):
            client.echo([b"%d" % i])
        # Ctrl-C, once. In 02-03 a SIGINT that lands inside zmq_poll but
        # outside its poll() system call waits for the next wake-up (stage
        # 04's self-pipe fixes that): a request is that wake-up.
        server.send_signal(signal.SIGINT)
        wait_for(lambda: client.echo([b"wake up"], timeout_ms=100) is None and not server.running(),
                 timeout=10, interval=0, message="exit on Ctrl-C")
    assert server.wait_exit(timeout=10) == 0
    records = json_lines(server.stdout())
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert "listening" in records[0]["message"]
    assert "stopped" in records[-1]["message"]
    assert sum(r["level"] == "DEBUG" for r in records) >= 20


def test_info_level_logs_no_record_per_request(stage, start_server):
    server = start_server(stage)
    with Client(server.endpoint) as client:
        for i in range(50):
            client.echo([b"%d" % i])
    assert len(json_lines(server.stdout())) == 1  # the startup record only


def test_crash_is_one_error_record_holding_the_whole_traceback(stage, start_server):
    server = start_server(stage, ECHO_FAULTS=1)
    assert crash(server) != 0
    records = json_lines(server.stdout())
    errors = [r for r in records if r["level"] == "ERROR"]
    assert len(errors) == 1 and errors[0] is records[-1]
    traceback = errors[0]["exception"]
    assert traceback.startswith("Traceback (most recent call last):")
    assert "in obey" in traceback
    assert traceback.rstrip().endswith("RuntimeError: fault injected: crash")
    assert server.stderr() == ""


def test_traceback_reaches_syslog_as_one_record(stage, start_server, rsyslog):
    server = start_server(stage, ECHO_FAULTS=1, LOG_SYSLOG=f"127.0.0.1:{rsyslog.port}")
    assert crash(server) != 0
    stdout_records = json_lines(server.stdout())
    received = wait_for(
        lambda: len(rsyslog.lines()) >= len(stdout_records) and rsyslog.records(),
        timeout=10, message="records at rsyslog",
    )
    assert received == stdout_records
    assert received[-1]["exception"].count("\n") >= 4  # multi-line, still one record
