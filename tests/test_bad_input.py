"""Bad input gets dropped and the service keeps answering everyone else."""

import socket

import pytest

from support import STAGES, Client, stage_constant, stages_from

LIMITED = stages_from("06")  # the stages with limits on what a message may be


def assert_still_answers(client):
    assert client.echo([b"still there?"]) == [b"still there?"]


@pytest.mark.parametrize("stage", STAGES)
def test_garbage_bytes_on_the_port(stage, start_server):
    server = start_server(stage)
    with Client(server.endpoint) as client:
        for garbage in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", bytes(range(256)) * 64, b"\xff" * 10):
            with socket.create_connection(("127.0.0.1", server.port), timeout=2) as raw:
                raw.sendall(garbage)
            assert_still_answers(client)


@pytest.mark.parametrize("stage", STAGES)
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


@pytest.mark.parametrize("stage", STAGES)
def test_empty_frames_are_echoed(stage, start_server):
    server = start_server(stage)
    with Client(server.endpoint) as client:
        assert client.echo([b""]) == [b""]
        assert client.echo([b"", b"", b""]) == [b"", b"", b""]


@pytest.mark.parametrize("stage", LIMITED)
def test_oversized_frame_is_dropped_and_others_are_served(stage, start_server):
    limit = stage_constant(stage, "MAX_MESSAGE_BYTES")
    server = start_server(stage)
    with Client(server.endpoint) as client, Client(server.endpoint) as abuser:
        assert abuser.echo([b"x" * (limit + 1)], timeout_ms=500) is None
        assert_still_answers(client)
        # A message right at the limit is still fine.
        assert client.echo([b"y" * limit]) == [b"y" * limit]
    assert server.running()


@pytest.mark.parametrize("stage", LIMITED)
@pytest.mark.parametrize("too_much", ["frames", "bytes"])
def test_message_over_the_frame_or_byte_limit_is_dropped_not_echoed(stage, start_server, too_much):
    """libzmq checks each frame's size only: the loop counts the rest, as the
    client sent them (the identity ROUTER puts first is not the client's)."""
    max_frames, max_bytes = stage_constant(stage, "MAX_FRAMES"), stage_constant(stage, "MAX_MESSAGE_BYTES")
    if too_much == "frames":
        message, at_the_limit = [b"f"] * (max_frames + 1), [b"f"] * max_frames
    else:  # each frame fits, the sum does not
        message = [b"b" * (max_bytes // 2), b"b" * (max_bytes // 2 + 1)]
        at_the_limit = [b"b" * (max_bytes // 2)] * 2
    server = start_server(stage)
    with Client(server.endpoint) as client:
        assert client.echo(message, timeout_ms=500) is None
        assert client.echo(at_the_limit) == at_the_limit
    assert server.running()
