"""Stage 05: /metrics tells the truth about the traffic, and a real Prometheus
server scrapes it."""

import re
import signal
from urllib.request import urlopen

import pytest
import zmq
from prometheus_client.parser import text_string_to_metric_families

from support import Client, stages_from, wait_for

METRICS = stages_from("05")

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


@pytest.mark.parametrize("stage", METRICS)
def test_metrics_parse_with_valid_names_and_help(stage, start_server):
    server = start_server(stage)
    families = scrape(server)
    echo_families = [f for f in families.values() if f.name.startswith("echo_")]
    assert {f.name for f in echo_families} >= {
        "echo_requests", "echo_request_duration_seconds", "echo_draining",
    }
    for family in echo_families:
        assert VALID_NAME.fullmatch(family.name) and family.documentation
    assert "process_resident_memory_bytes" in families  # the default collectors


@pytest.mark.parametrize("stage", METRICS)
def test_request_counter_and_histogram_count_every_request(stage, start_server):
    server = start_server(stage)
    before = value(scrape(server), "echo_requests", "echo_requests_total")  # the readiness echo
    send(server, 137)
    families = scrape(server)
    assert value(families, "echo_requests", "echo_requests_total") == before + 137
    assert value(families, "echo_request_duration_seconds", "echo_request_duration_seconds_count") == before + 137


@pytest.mark.parametrize("stage", METRICS)
def test_slow_request_lands_in_a_slow_bucket(stage, start_server):
    server = start_server(stage, ECHO_FAULTS=1)
    with Client(server.endpoint) as client:
        assert client.echo([b"__fault__", b"slow:300"]) is not None
    families = scrape(server)
    fast = next(s.value for s in families["echo_request_duration_seconds"].samples
                if s.name.endswith("_bucket") and s.labels["le"] == "0.25")
    total = value(families, "echo_request_duration_seconds", "echo_request_duration_seconds_count")
    assert total - fast == 1


def dropped(server, direction, reason):
    samples = scrape(server).get("echo_dropped_messages")
    return next((s.value for s in samples.samples if s.name == "echo_dropped_messages_total"
                 and s.labels == {"direction": direction, "reason": reason}), 0) if samples else 0


@pytest.mark.parametrize("stage", stages_from("06"))
def test_a_message_over_the_limits_is_counted_where_it_is_dropped(stage, start_server):
    server = start_server(stage)
    with Client(server.endpoint) as client:
        assert client.echo([b"f"] * 20, timeout_ms=300) is None
        assert client.echo([b"after"]) == [b"after"]
    assert dropped(server, "request", "over_limits") == 1


@pytest.mark.parametrize("stage", stages_from("06"))
def test_replies_to_a_client_that_does_not_read_are_counted_not_echoed(stage, start_server):
    """Past QUEUED_REPLIES, ROUTER drops replies to a peer. Without
    ROUTER_MANDATORY it does so silently and the request counter counts them
    as echoed; here each is counted once, as echoed or as dropped."""
    server = start_server(stage)
    before = value(scrape(server), "echo_requests", "echo_requests_total")
    sent = 20_000
    with Client(server.endpoint) as slow_reader:
        slow_reader.socket.setsockopt(zmq.RCVHWM, 10)
        slow_reader.socket.setsockopt(zmq.RCVBUF, 4096)
        for i in range(sent):
            slow_reader.socket.send(b"%d" % i)
        wait_for(lambda: value(scrape(server), "echo_requests", "echo_requests_total") - before
                 + dropped(server, "reply", "queue_full") >= sent, timeout=20, interval=0.1,
                 message="every request echoed or dropped")
    echoed = value(scrape(server), "echo_requests", "echo_requests_total") - before
    assert dropped(server, "reply", "queue_full") > 0
    assert echoed + dropped(server, "reply", "queue_full") == sent


@pytest.mark.parametrize("stage", stages_from("06"))
def test_a_reply_to_a_client_that_left_is_counted_as_dropped(stage, start_server):
    server = start_server(stage, ECHO_FAULTS=1)
    with Client(server.endpoint) as client:
        client.socket.linger = 2000  # closing waits until the request has left
        client.socket.send_multipart([b"__fault__", b"slow:500"])  # the loop sleeps; the client leaves
    wait_for(lambda: dropped(server, "reply", "peer_gone") == 1, timeout=5, message="the reply counted as dropped")


@pytest.mark.parametrize("stage", METRICS)
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


@pytest.mark.parametrize("stage", METRICS)
def test_prometheus_server_scrapes_the_request_count(stage, start_server, start_prometheus):
    server = start_server(stage)
    send(server, 250)
    expected = value(scrape(server), "echo_requests", "echo_requests_total")
    prometheus = start_prometheus([f"127.0.0.1:{server.env['METRICS_PORT']}"])
    wait_for(lambda: prometheus.query("echo_requests_total") == [expected],
             timeout=30, interval=0.25, message=f"Prometheus to report {expected} requests")
