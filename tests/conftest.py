import pytest

from support import EchoServer

pytest_plugins = ["services"]  # the rsyslog and Prometheus fixtures


@pytest.fixture
def start_server(tmp_path):
    """Start a stage's server; every one started is killed at the end of the test."""
    servers = []

    def start(stage, wait_ready=True, **env):
        server = EchoServer(stage, tmp_path, **env)
        servers.append(server)
        return server.start(wait_ready=wait_ready)

    yield start
    for server in servers:
        server.stop()
