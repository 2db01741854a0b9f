"""Stage 03 on: healthcheck.py answers 'is the echo loop alive?' and never hangs."""

import os
import subprocess
import sys
import time

import pytest

from support import STAGES_DIR, Client, free_port, stages_from

pytestmark = pytest.mark.parametrize("stage", stages_from("03"))

TIMEOUT_MS = 500


def healthcheck(stage, endpoint):
    """Run the probe as the kubelet would; return (exit code, stderr, seconds)."""
    env = {**os.environ, "ECHO_BIND": endpoint, "HEALTHCHECK_TIMEOUT_MS": str(TIMEOUT_MS)}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "healthcheck.py"], cwd=STAGES_DIR / stage, env=env,
        capture_output=True, text=True, timeout=10,
    )
    return result.returncode, result.stderr, time.monotonic() - started


def test_healthy_server_passes(stage, start_server):
    server = start_server(stage)
    code, stderr, _ = healthcheck(stage, server.endpoint)
    assert (code, stderr) == (0, "")


def test_wildcard_bind_is_probed_on_loopback(stage, start_server):
    server = start_server(stage)
    code, _, _ = healthcheck(stage, f"tcp://*:{server.port}")
    assert code == 0


def test_hung_loop_fails_within_the_timeout(stage, start_server):
    """A stuck loop still completes ZeroMQ handshakes (libzmq's I/O thread does
    them): only the missing echo tells. The script's own wait is bounded by its
    timeout: no longer than a healthy check (start-up and all) plus the timeout."""
    server = start_server(stage, ECHO_FAULTS="1")
    _, _, healthy_seconds = healthcheck(stage, server.endpoint)
    with Client(server.endpoint) as client:
        client.socket.send_multipart([b"__fault__", b"hang"])
        assert client.echo([b"after the hang"], timeout_ms=300) is None
    code, stderr, seconds = healthcheck(stage, server.endpoint)
    assert code == 1
    assert stderr.count("\n") == 1 and "no echo" in stderr
    assert TIMEOUT_MS / 1000 <= seconds < healthy_seconds + TIMEOUT_MS / 1000 + 1


def test_nothing_listening_fails(stage):
    code, stderr, _ = healthcheck(stage, f"tcp://127.0.0.1:{free_port()}")
    assert code == 1 and "no echo" in stderr
