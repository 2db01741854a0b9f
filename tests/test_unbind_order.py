"""Why stage 04 never unbinds before flushing: in libzmq, unbinding a ROUTER's
endpoint drops the peers that connected through it (libzmq#3317), so replies
sent after an unbind are lost. This proves the order with libzmq itself.

The drop happens in libzmq's I/O thread a moment after unbind() returns, so
replies sent at once race it (anything from none to all got through in our
runs); the test waits until the ROUTER no longer knows the peer (a send with
ROUTER_MANDATORY says "host unreachable"), and then none arrive."""

import zmq

from support import Client, free_port, wait_for

REQUESTS = 200
PROBE = b"probe"


def peer_is_gone(router, identity):
    try:
        router.send_multipart([identity, PROBE], zmq.NOBLOCK)
    except zmq.ZMQError as error:
        return error.errno == zmq.EHOSTUNREACH
    return False


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
            router.setsockopt(zmq.ROUTER_MANDATORY, 1)
            wait_for(lambda: peer_is_gone(router, received[0][0]), timeout=5, message="libzmq to drop the peer")
            router.setsockopt(zmq.ROUTER_MANDATORY, 0)  # as in the stages: unroutable replies are dropped
        for frames in received:
            router.send_multipart(frames)
        replies = client.receive_all(REQUESTS, timeout_s=1)
        delivered = len([r for r in replies if r != [PROBE]])
    router.close(linger=1000)
    context.term()
    return delivered


def test_replies_after_unbind_are_lost():
    assert replies_delivered(unbind_first=True) == 0


def test_replies_without_unbind_all_arrive():
    assert replies_delivered(unbind_first=False) == REQUESTS
