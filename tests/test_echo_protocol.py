"""The contract every stage keeps: whatever is sent comes back unchanged."""

import time

import pytest
import zmq

from support import STAGES, Client, stage_constant

pytestmark = pytest.mark.parametrize("stage", STAGES)
LIBZMQ_DEFAULT_HWM = 1000  # messages, each way


def test_req_client_gets_its_message_back(stage, start_server):
    server = start_server(stage)
    with Client(server.endpoint, zmq.REQ) as client:
        assert client.echo([b"hello"]) == [b"hello"]


def test_dealer_multipart_frames_come_back_in_order(stage, start_server):
    server = start_server(stage)
    frames = [b"one", b"", b"three" * 100, bytes(range(256))]
    with Client(server.endpoint) as client:
        assert client.echo(frames) == frames


def test_a_full_window_of_pipelined_requests_is_all_answered(stage, start_server):
    """A client may keep half the reply high-water mark unanswered (06's
    QUEUED_REPLIES, else libzmq's default of 1,000): 2,000 requests with
    that window kept full, none lost."""
    window = stage_constant(stage, "QUEUED_REPLIES", default=LIBZMQ_DEFAULT_HWM) // 2
    server = start_server(stage)
    replies = []
    with Client(server.endpoint) as client:
        for i in range(window):
            client.socket.send_multipart([b"%d" % i])
        for i in range(window, 2000 + window):
            reply = client.receive_all(1, timeout_s=5)
            if not reply:
                break
            replies += reply
            if i < 2000:
                client.socket.send_multipart([b"%d" % i])
    assert [int(r[0]) for r in replies] == list(range(2000))


def test_binds_where_echo_bind_says(stage, start_server):
    server = start_server(stage, host="127.0.0.7")
    with Client(server.endpoint) as client:
        assert client.echo([b"x"]) == [b"x"]
    with Client(f"tcp://127.0.0.1:{server.port}") as elsewhere:
        assert elsewhere.echo([b"x"], timeout_ms=300) is None


def test_fault_message_is_echoed_when_faults_are_off(stage, start_server):
    server = start_server(stage)
    with Client(server.endpoint) as client:
        assert client.echo([b"__fault__", b"crash"]) == [b"__fault__", b"crash"]
    assert server.running()


def test_crash_fault_ends_the_process_with_an_error(stage, start_server):
    server = start_server(stage, ECHO_FAULTS=1)
    with Client(server.endpoint) as client:
        client.socket.send_multipart([b"__fault__", b"crash"])
        assert server.wait_exit(timeout=10) != 0


def test_slow_fault_stalls_the_whole_loop_for_that_long(stage, start_server):
    """One loop serves everyone: a request sent right behind a slow one waits
    for it, and the two come back in order."""
    server = start_server(stage, ECHO_FAULTS=1)
    with Client(server.endpoint) as client:
        started = time.monotonic()
        client.socket.send_multipart([b"__fault__", b"slow:300"])
        client.socket.send_multipart([b"right behind"])
        replies = client.receive_all(2, timeout_s=5)
        waited = time.monotonic() - started
    assert replies == [[b"__fault__", b"slow:300"], [b"right behind"]]
    assert waited >= 0.3


def test_hang_fault_freezes_the_loop_but_not_the_process(stage, start_server):
    server = start_server(stage, ECHO_FAULTS=1)
    with Client(server.endpoint) as client:
        client.socket.send_multipart([b"__fault__", b"hang"])
        assert client.echo([b"anyone?"], timeout_ms=500) is None
    assert server.running()
