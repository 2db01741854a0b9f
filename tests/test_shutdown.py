"""Stage 04 on: SIGTERM drains what is in flight and exits 0, promptly.
Stage 03, without a handler, loses what was in flight: that is the lesson."""

import json
import signal
import time

import pytest

from bench.attacks import record_time
from support import Client, ServerProcess, free_port, stages_from, wait_for
from workshop.backends.kubelet import AS_PID_1

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


@pytest.mark.parametrize("stage", stages_from("04"))
def test_sigterm_during_a_slow_start_is_not_lost_as_pid_1(stage, tmp_path):
    """As a container's PID 1, a SIGTERM that comes before the handler is
    ignored, and the pod waits for SIGKILL. The handler comes before anything
    slow: a SIGTERM as the server begins its start-up delay (the import of
    workshop_faults, which sleeps) still ends it, cleanly, once it is up."""
    delay_s = 2
    (tmp_path / "sitecustomize.py").write_text(SPY)
    spied = tmp_path / "spied"
    server = ServerProcess.of_stage(stage, {"ECHO_BIND": f"tcp://127.0.0.1:{free_port()}",
                                            "ECHO_STARTUP_DELAY": delay_s, "PYTHONPATH": tmp_path,
                                            "SPY_OUT": spied, "SPY_ON": "workshop_faults"},
                                    tmp_path / "out.log", launcher=AS_PID_1).start()
    try:
        wait_for(lambda: spied.exists() and spied.read_text(), timeout=10, interval=0.005,
                 message="the server to begin its start-up delay")
        server.signal(signal.SIGTERM)
        assert server.wait(timeout=delay_s + DRAIN_QUIET_MS / 1000 + 10) == 0, server.output()
    finally:
        server.kill()


SPY = '''
import os, signal, sys

class Spy:  # says, when the first of the server's slow imports starts, whether SIGTERM has a handler yet
    def find_spec(self, name, path=None, target=None):
        watched = os.environ.get("SPY_ON", "json logbook zmq workshop_faults").split()
        if name in watched and "SPY_OUT" in os.environ:
            handled = signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
            open(os.environ.pop("SPY_OUT"), "w").write(f"{name} {handled}")
        return None

sys.meta_path.insert(0, Spy())
'''


@pytest.mark.parametrize("stage", stages_from("04"))
def test_the_sigterm_handler_comes_before_the_imports(stage, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(SPY)
    spied = tmp_path / "spied"
    server = ServerProcess.of_stage(stage, {"ECHO_BIND": f"tcp://127.0.0.1:{free_port()}",
                                            "PYTHONPATH": tmp_path, "SPY_OUT": spied}, tmp_path / "out.log").start()
    try:
        wait_for(lambda: spied.exists() and spied.read_text(), timeout=10, message="the first slow import")
        first_import, handled = spied.read_text().split()
        assert handled == "True", f"SIGTERM had no handler yet when {first_import} was imported"
    finally:
        server.kill()
