"""Stage 05: /metrics tells the truth about the traffic, and a real Prometheus
server scrapes it."""

import re
import signal
import socket
from urllib.request import urlopen

import pytest
from prometheus_client.parser import text_string_to_metric_families

from support import Client, stages_from, wait_for

pytestmark = pytest.mark.parametrize("stage", stages_from("05"))

VALID_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def scrape(server):
    port = server.env["METRICS_PORT"]
    with urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        return {f.name: f for f in text_string_to_metric_families(response.read().decode())}


def value(families, family, sample_name=None):
    return next(s.value for s in families[family].samples if s.name == (sample_name or family))


def send(server, count):
    with Client(server.endpoint) as client:
        for i in range(count):
            assert client.echo([b"%d" % i]) == [b"%d" % i]


def test_metrics_parse_with_valid_names_and_help(stage, start_server):
    server = start_server(stage)
    families = scrape(server)
    echo_families = [f for f in families.values() if f.name.startswith("echo_")]
    assert {f.name for f in echo_families} >= {
        "echo_requests", "echo_request_duration_seconds", "echo_draining",
        "echo_handshake_failures", "echo_disconnects",
    }
    for family in echo_families:
        assert VALID_NAME.fullmatch(family.name) and family.documentation
    assert "process_resident_memory_bytes" in families  # the default collectors


def test_request_counter_and_histogram_count_every_request(stage, start_server):
    server = start_server(stage)
    before = value(scrape(server), "echo_requests", "echo_requests_total")  # the readiness echo
    send(server, 137)
    families = scrape(server)
    assert value(families, "echo_requests", "echo_requests_total") == before + 137
    assert value(families, "echo_request_duration_seconds", "echo_request_duration_seconds_count") == before + 137


def test_slow_request_lands_in_a_slow_bucket(stage, start_server):
    server = start_server(stage, ECHO_FAULTS=1)
    with Client(server.endpoint) as client:
        assert client.echo([b"__fault__", b"slow:300"]) is not None
    families = scrape(server)
    fast = next(s.value for s in families["echo_request_duration_seconds"].samples
                if s.name.endswith("_bucket") and s.labels["le"] == "0.25")
    total = value(families, "echo_request_duration_seconds", "echo_request_duration_seconds_count")
    assert total - fast == 1


def counted(server, family):
    return value(scrape(server), family, f"{family}_total")


def test_oversized_frame_drops_its_sender_and_is_counted(stage, start_server):
    server = start_server(stage)
    # The readiness client's hang-up is counted too, a moment later: let it land first.
    wait_for(lambda: counted(server, "echo_disconnects") >= 1, timeout=5, message="the readiness client's hang-up")
    before = counted(server, "echo_disconnects")
    with Client(server.endpoint) as abuser:
        abuser.socket.send(b"x" * (1024 * 1024 + 1))
        wait_for(lambda: counted(server, "echo_disconnects") == before + 1, timeout=5,
                 message="the oversized sender to be dropped")
        assert abuser.socket.poll(200) == 0  # and it got no echo
    assert counted(server, "echo_handshake_failures") == 0


def test_garbage_connection_is_counted_as_a_handshake_failure(stage, start_server):
    server = start_server(stage)
    assert counted(server, "echo_handshake_failures") == 0
    with socket.create_connection(("127.0.0.1", server.port), timeout=2) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\n\r\n")
    wait_for(lambda: counted(server, "echo_handshake_failures") == 1, timeout=5,
             message="the garbage connection to be counted")


def test_draining_gauge_is_set_after_sigterm(stage, start_server):
    server = start_server(stage, DRAIN_TIMEOUT_S=3)
    assert value(scrape(server), "echo_draining") == 0
    with Client(server.endpoint) as client:
        server.send_signal(signal.SIGTERM)

        def draining():
            client.echo([b"keep me busy"], timeout_ms=200)
            return value(scrape(server), "echo_draining") == 1
        wait_for(draining, timeout=3, interval=0.05, message="echo_draining to be 1")
    assert server.wait_exit(timeout=10) == 0


def test_prometheus_server_scrapes_the_request_count(stage, start_server, start_prometheus):
    server = start_server(stage)
    send(server, 250)
    expected = value(scrape(server), "echo_requests", "echo_requests_total")
    prometheus = start_prometheus([f"127.0.0.1:{server.env['METRICS_PORT']}"])
    wait_for(lambda: prometheus.query("echo_requests_total") == [expected],
             timeout=30, interval=0.25, message=f"Prometheus to report {expected} requests")
