import signal

import pytest

from support import EchoServer

# Ctrl-C as a terminal delivers it. A shell's background job (a CI runner's,
# say) starts with SIGINT ignored, and an ignored signal stays ignored across
# exec: every process the tests start would then ignore the SIGINT the tests
# send it. A handler here becomes the default action again in them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

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
