"""Bad input gets dropped and the service keeps answering everyone else."""

import socket

import pytest

from support import STAGES, Client

pytestmark = pytest.mark.parametrize("stage", STAGES)

MAX_MESSAGE_BYTES = 1024 * 1024


def assert_still_answers(client):
    assert client.echo([b"still there?"]) == [b"still there?"]


def test_garbage_bytes_on_the_port(stage, start_server):
    server = start_server(stage)
    with Client(server.endpoint) as client:
        for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256)) * 64, b"\xff" * 10):
            with socket.create_connection(("127.0.0.1", server.port), timeout=2) as raw:
                raw.sendall(garbage)
            assert_still_answers(client)


def test_half_open_tcp_connections_like_a_tcp_probe(stage, start_server):
    server = start_server(stage)
    held_open = [socket.create_connection(("127.0.0.1", server.port), timeout=2) for _ in range(20)]
    try:
        with Client(server.endpoint) as client:
            assert_still_answers(client)
            for raw in held_open[:10]:
                raw.close()  # connect and hang up: exactly what a tcpSocket probe does
            assert_still_answers(client)
    finally:
        for raw in held_open:
            raw.close()


def test_empty_frames_are_echoed(stage, start_server):
    server = start_server(stage)
    with Client(server.endpoint) as client:
        assert client.echo([b""]) == [b""]
        assert client.echo([b"", b"", b""]) == [b"", b"", b""]


def test_oversized_message_is_dropped_and_others_are_served(stage, start_server):
    server = start_server(stage)
    with Client(server.endpoint) as client, Client(server.endpoint) as abuser:
        assert abuser.echo([b"x" * (MAX_MESSAGE_BYTES + 1)], timeout_ms=500) is None
        assert_still_answers(client)
        # A message right at the limit is still fine.
        assert client.echo([b"y" * MAX_MESSAGE_BYTES]) == [b"y" * MAX_MESSAGE_BYTES]
    assert server.running()
