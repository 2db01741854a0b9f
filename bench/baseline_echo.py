"""The baseline: the talk's first slide, a bare ROUTER + Poller echo loop,
one message per poll. The stages are measured against it."""

import os

import zmq

context = zmq.Context()
router = context.socket(zmq.ROUTER)
router.bind(os.environ.get("ECHO_BIND", "tcp://*:5555"))
poller = zmq.Poller()
poller.register(router, zmq.POLLIN)
while True:
    if poller.poll():
        router.send_multipart(router.recv_multipart())
