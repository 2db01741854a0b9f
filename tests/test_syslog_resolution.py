"""LOG_SYSLOG names its receiver by host name; the server resolves that name
ONCE, at start-up. Resolved per record, every log line would put a DNS lookup
(several, with a Kubernetes search path) on the echo loop, and a slow resolver
would stall every request.

Checked with a real resolver: the server runs with its own /etc/resolv.conf
pointing at a DNS server in this test, which counts the queries it gets.
"""

import os
import socket
import subprocess
import sys
import time

import pytest

from private_resolver import TinyDNS, private_resolver_prefix
from support import STAGES, STAGES_DIR, Client, free_port
from workshop.client import wait_for_first_echo

SYSLOG_NAME = "syslog.workshop.test"  # made up: only the test's DNS server knows it
ECHOES = 30  # at LOG_LEVEL=DEBUG a record each

STAGES_WITH_SYSLOG = [s for s in STAGES if '"LOG_SYSLOG"' in (STAGES_DIR / s / "echo_server.py").read_text()]


@pytest.fixture
def dns():
    server = TinyDNS(SYSLOG_NAME, address="127.0.0.1")
    yield server
    server.stop()


@pytest.fixture
def syslog_receiver():
    """A plain UDP socket: each datagram the server sends is one record."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        yield receiver


def receive_datagrams(receiver, count, timeout_s):
    """Up to `count` datagrams, stopping at the deadline."""
    datagrams = []
    deadline = time.monotonic() + timeout_s
    while len(datagrams) < count and (left := deadline - time.monotonic()) > 0:
        receiver.settimeout(left)
        try:
            datagrams.append(receiver.recv(65536))
        except TimeoutError:
            break
    return datagrams


@pytest.fixture
def start_with_private_resolver(tmp_path):
    """Start a stage's server behind `private_resolver_prefix`; killed at the end."""
    processes = []

    def start(stage, nameserver_ip, **settings):
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        env = {**os.environ, "ECHO_BIND": endpoint, "METRICS_PORT": str(free_port()), **settings}
        command = [*private_resolver_prefix(tmp_path, nameserver_ip), sys.executable, "echo_server.py"]
        with open(tmp_path / "server.out", "wb") as output:
            process = subprocess.Popen(command, cwd=STAGES_DIR / stage, env=env, stdin=subprocess.DEVNULL,
                                       stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        processes.append(process)
        try:
            wait_for_first_echo(endpoint, timeout_s=10, still_running=lambda: process.poll() is None)
        except (RuntimeError, TimeoutError) as error:
            pytest.fail(f"{error}\n{(tmp_path / 'server.out').read_text(errors='replace')}")
        return endpoint

    yield start
    for process in processes:
        process.kill()
        process.wait(10)


@pytest.mark.parametrize("stage", STAGES_WITH_SYSLOG)
def test_syslog_host_is_resolved_once_not_per_record(stage, dns, syslog_receiver, start_with_private_resolver):
    port = syslog_receiver.getsockname()[1]
    endpoint = start_with_private_resolver(stage, dns.ip, LOG_LEVEL="DEBUG", LOG_SYSLOG=f"{SYSLOG_NAME}:{port}")
    with Client(endpoint) as client:
        for i in range(ECHOES):
            assert client.echo([b"%d" % i]) == [b"%d" % i]
    # Each record is logged before its echo is sent, so all are on their way.
    records = receive_datagrams(syslog_receiver, ECHOES + 1, timeout_s=5)
    assert len(records) >= ECHOES + 1, f"only {len(records)} records reached the receiver"
    # One A query (two if AAAA is asked too) however many records were sent;
    # at least one, or the records did not come through the test's resolver.
    queries = dns.queries_for(SYSLOG_NAME)
    assert 1 <= len(queries) <= 2, f"{len(queries)} DNS queries for {len(records)} records: {queries[:6]}"
