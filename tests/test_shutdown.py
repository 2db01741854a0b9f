"""Stage 04 on: SIGTERM drains what is in flight and exits 0, promptly.
Stage 03, without a handler, loses what was in flight: that is the lesson."""

import json
import signal
import time

import pytest

from bench.attacks import record_time
from support import Client, stages_from

IN_FLIGHT = 2000
DRAIN_QUIET_MS = 500
DRAIN_TIMEOUT_S = 5


def send_then_sigterm(server, client):
    for i in range(IN_FLIGHT):
        client.socket.send_multipart([b"%d" % i])
    server.send_signal(signal.SIGTERM)
    return client.receive_all(IN_FLIGHT, timeout_s=5)


@pytest.mark.parametrize("stage", stages_from("04"))
def test_sigterm_answers_every_request_in_flight(stage, start_server):
    server = start_server(stage)
    with Client(server.endpoint) as client:
        replies = send_then_sigterm(server, client)
    assert len(replies) == IN_FLIGHT
    assert server.wait_exit(timeout=10) == 0
    messages = [json.loads(line)["message"] for line in server.stdout().splitlines()]
    assert any(m.startswith("drained ") for m in messages)


def test_stage_03_loses_requests_in_flight_on_sigterm(start_server):
    server = start_server("03-probes")
    with Client(server.endpoint) as client:
        replies = send_then_sigterm(server, client)
    assert len(replies) < IN_FLIGHT
    assert server.wait_exit(timeout=10) == -signal.SIGTERM


def logged_at(server, words):
    """When the server logged the first record containing `words` (its own clock)."""
    at = record_time(server.stdout(), words)
    assert at is not None, f"no record says {words!r}"
    return at


@pytest.mark.parametrize("stage", stages_from("04"))
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_idle_server_stops_after_the_quiet_period_not_the_deadline(stage, signum, start_server):
    server = start_server(stage, DRAIN_QUIET_MS=DRAIN_QUIET_MS, DRAIN_TIMEOUT_S=DRAIN_TIMEOUT_S)
    server.send_signal(signum)
    assert server.wait_exit(timeout=10) == 0
    draining = logged_at(server, "received, draining")
    stopped = logged_at(server, "echo server stopped")
    assert DRAIN_QUIET_MS / 1000 <= stopped - draining < DRAIN_TIMEOUT_S / 2
    assert signum.name in server.stdout()


@pytest.mark.parametrize("stage", stages_from("04"))
def test_trickling_client_is_answered_until_the_deadline(stage, start_server):
    """A request every 100 ms never lets the server go quiet: it keeps
    answering until DRAIN_TIMEOUT_S, then exits 0."""
    server = start_server(stage, DRAIN_QUIET_MS=DRAIN_QUIET_MS, DRAIN_TIMEOUT_S=2)
    answered_after_sigterm = 0
    with Client(server.endpoint) as client:
        server.send_signal(signal.SIGTERM)
        started = time.monotonic()
        while server.running() and time.monotonic() - started < 5:
            if client.echo([b"trickle"], timeout_ms=100) == [b"trickle"]:
                answered_after_sigterm += 1
                time.sleep(0.1)  # the pacing of the trickle, not a synchronisation
    assert server.wait_exit(timeout=10) == 0
    drained_for = logged_at(server, "echo server stopped") - logged_at(server, "received, draining")
    assert 2 <= drained_for < 2 + DRAIN_QUIET_MS / 1000
    assert answered_after_sigterm >= 10
