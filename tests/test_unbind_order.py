"""Why stage 04 never unbinds before flushing: in libzmq, unbinding a ROUTER's
endpoint drops the peers that connected through it (libzmq#3317), so replies
sent after an unbind are lost. This proves the order with libzmq itself."""

import zmq

from support import Client, free_port

REQUESTS = 200


def replies_delivered(unbind_first):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(endpoint)
    with Client(endpoint) as client:
        for i in range(REQUESTS):
            client.socket.send_multipart([b"%d" % i])
        received = [router.recv_multipart() for _ in range(REQUESTS) if router.poll(2000)]
        assert len(received) == REQUESTS  # every request is in the server's hands
        if unbind_first:
            router.unbind(endpoint)  # the talk's order: unbind, then answer
        for frames in received:
            router.send_multipart(frames)
        delivered = len(client.receive_all(REQUESTS, timeout_s=1))
    router.close(linger=1000)
    context.term()
    return delivered


def test_replies_after_unbind_are_lost():
    assert replies_delivered(unbind_first=True) < REQUESTS


def test_replies_without_unbind_all_arrive():
    assert replies_delivered(unbind_first=False) == REQUESTS
