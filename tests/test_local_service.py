"""The local backend's Service (kube-proxy as a relay): per-connection
balancing over the endpoint feed, conntrack-like stickiness, resets when no
endpoint is ready, and ends passed on as they happened. Real echo servers,
real ZeroMQ and real sockets over loopback; the feed is published by hand."""

import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack

import pytest
import zmq
from support import Client, free_port, wait_for

from workshop.backends.local import loopback_aliases_work
from workshop.backends.local_service import LINGER_ZERO, LocalService, host_port
from workshop.feed import Endpoint, EndpointFeed

STAGE = "04-shutdown"
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"] if loopback_aliases_work() else ["127.0.0.1"] * 3


@pytest.fixture
def feed():
    return EndpointFeed()


@pytest.fixture
def service(feed):
    with LocalService(feed) as running:
        yield running


@pytest.fixture
def pods(start_server):
    """start(n): n echo servers, as {pod name: (server, Endpoint)}. DEBUG
    logging writes one line per echo: each server's own request count."""
    def start(n):
        pods = {}
        for i, host in enumerate(HOSTS[:n]):
            server = start_server(STAGE, host=host, LOG_LEVEL="DEBUG")
            pods[f"pod-{i}"] = server, Endpoint(f"pod-{i}", server.endpoint)
        return pods
    return start


def endpoints(pods, *names):
    return [pods[name][1] for name in names or pods]


def echoes(server):
    """Requests of ours (3 frames with the identity) this server answered;
    the readiness check's echo has 2."""
    return server.stdout().count('"echo 3 frames"')


def echo(client, i, timeout_ms=2000):
    frames = [b"req", b"%d" % i]
    return client.echo(frames, timeout_ms) == frames


def test_a_connection_stays_with_one_pod(pods, feed, service):
    pods = pods(3)
    feed.publish(endpoints(pods))
    with Client(service.address) as client:
        assert all(echo(client, i) for i in range(50))
        (pod,) = service.connections()
    # every one of them reached that pod's process, none any other
    wait_for(lambda: echoes(pods[pod][0]) == 50, timeout=5, message="50 echoes logged by its pod")
    assert {name: echoes(server) for name, (server, _) in pods.items() if name != pod} == {
        name: 0 for name in pods if name != pod}


def test_new_connections_are_spread_over_the_pods(pods, feed, service):
    pods = pods(3)
    feed.publish(endpoints(pods))
    context = zmq.Context()
    sockets = []
    try:
        for i in range(60):  # a pod left out of 60 random picks: p ~ 3 * (2/3)**60 ~ 1e-10
            sock = context.socket(zmq.DEALER)
            sock.linger = 0
            sock.connect(service.address)
            sock.send_multipart([b"req", b"%d" % i])
            sockets.append(sock)
        for i, sock in enumerate(sockets):
            assert sock.poll(5000) and sock.recv_multipart() == [b"req", b"%d" % i]
        per_pod = Counter(service.connections())
    finally:
        for sock in sockets:
            sock.close()
        context.term()
    assert sum(per_pod.values()) == 60
    assert set(per_pod) == set(pods)


def test_removing_the_endpoint_keeps_an_established_connection(pods, feed, service):
    pods = pods(2)
    feed.publish(endpoints(pods))
    with Client(service.address) as client:
        assert echo(client, 0)
        (pod,) = service.connections()
        (other,) = set(pods) - {pod}
        feed.publish(endpoints(pods, other))
        assert all(echo(client, i) for i in range(1, 21))
        assert service.connections() == [pod]
    wait_for(lambda: echoes(pods[pod][0]) == 21, timeout=5, message="21 echoes logged by the same pod")


def test_new_connections_follow_the_feed(pods, feed, service):
    pods = pods(2)
    feed.publish(endpoints(pods, "pod-1"))
    with ExitStack() as clients:
        for i in range(10):
            assert echo(clients.enter_context(Client(service.address)), i)
        assert service.connections() == ["pod-1"] * 10
    assert echoes(pods["pod-0"][0]) == 0


def test_client_moves_to_a_ready_pod_when_its_pod_is_killed(pods, feed, service):
    pods = pods(2)
    feed.publish(endpoints(pods))
    with Client(service.address) as client:
        assert echo(client, 0)
        (doomed,) = service.connections()
        (survivor,) = set(pods) - {doomed}
        feed.publish(endpoints(pods, survivor))  # the endpoints controller is first
        pods[doomed][0].stop()  # SIGKILL
        # libzmq reconnects by itself; requests sent meanwhile may be lost
        wait_for(lambda: echo(client, 1, timeout_ms=200), timeout=10, interval=0,
                 message="an answer after the reconnection")
        wait_for(lambda: service.connections() == [survivor], timeout=5, message="one connection, to the survivor")
    assert echoes(pods[survivor][0]) >= 1


def test_no_ready_endpoint_resets_the_connection(feed, service):
    def say_hello():  # the reset may come as soon as connect() returns
        with socket.create_connection(host_port(service.address), timeout=5) as raw:
            raw.sendall(b"hello")
            raw.recv(1)  # no byte ever comes: the reset does

    with pytest.raises(ConnectionResetError):
        say_hello()
    assert service.rejected == 1
    assert service.connections() == []


def test_zeromq_client_is_answered_once_an_endpoint_is_ready(pods, feed, service):
    pods = pods(1)
    with Client(service.address) as client:
        client.socket.send_multipart([b"req", b"0"])
        wait_for(lambda: service.rejected >= 1, timeout=5, message="the client's connection reset")
        assert client.socket.poll(0) == 0
        feed.publish(endpoints(pods))
        assert client.receive_all(1, timeout_s=10) == [[b"req", b"0"]]


def test_a_megabyte_multipart_message_passes_intact(pods, feed, service):
    """Far past one TCP segment or buffer (the stage takes any size); the
    plain TCP tests below relay hundreds of kilobytes."""
    pods = pods(1)
    feed.publish(endpoints(pods))
    frames = [b"big", os.urandom(1_000_000), b"", os.urandom(100)]
    with Client(service.address) as client:
        assert client.echo(frames, timeout_ms=10000) == frames


# -- how a side's end reaches the other side, with a plain TCP "pod" --

@pytest.fixture
def tcp_pod(feed):
    """A listening socket published as the only endpoint; the test accepts."""
    with socket.create_server((HOSTS[0], 0)) as listener:
        listener.settimeout(5)
        feed.publish([Endpoint("tcp-pod", f"tcp://{HOSTS[0]}:{listener.getsockname()[1]}")])
        yield listener


def relayed_pair(service, tcp_pod):
    client = socket.create_connection(host_port(service.address), timeout=5)
    pod, _ = tcp_pod.accept()
    pod.settimeout(5)
    return client, pod


def read_to_the_end(sock):
    data = bytearray()
    while chunk := sock.recv(65536):
        data += chunk
    return bytes(data)


def test_a_pods_fin_reaches_the_client_after_all_its_data(service, tcp_pod):
    client, pod = relayed_pair(service, tcp_pod)
    with client, pod:
        payload = os.urandom(300 * 1024)
        pod.sendall(payload)
        pod.shutdown(socket.SHUT_WR)
        assert read_to_the_end(client) == payload  # then EOF, not a reset
        client.sendall(b"half-closed, still relayed")  # a FIN is a half-close
        assert pod.recv(100) == b"half-closed, still relayed"
        client.shutdown(socket.SHUT_WR)
        assert pod.recv(100) == b""
    wait_for(lambda: service.connections() == [], timeout=5, message="the relay's end")


def test_a_clients_fin_still_lets_the_pod_answer(service, tcp_pod):
    client, pod = relayed_pair(service, tcp_pod)
    with client, pod:
        client.sendall(b"question")
        client.shutdown(socket.SHUT_WR)
        assert read_to_the_end(pod) == b"question"
        answer = os.urandom(300 * 1024)
        pod.sendall(answer)
        pod.shutdown(socket.SHUT_WR)
        assert read_to_the_end(client) == answer
    wait_for(lambda: service.connections() == [], timeout=5, message="the relay's end")


@pytest.mark.parametrize("resetting", ["pod", "client"])
def test_a_reset_on_one_side_resets_the_other(service, tcp_pod, resetting):
    client, pod = relayed_pair(service, tcp_pod)
    reset, other = (pod, client) if resetting == "pod" else (client, pod)
    with other:
        reset.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
        reset.close()
        with pytest.raises(ConnectionResetError):
            read_to_the_end(other)
    wait_for(lambda: service.connections() == [], timeout=5, message="the relay's end")


# -- close() --

FLOOD = """
import select, socket, sys
listener = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("listening", flush=True)
conn, _ = listener.accept()
conn.setblocking(False)
while True:  # write until nobody has read for a second: the relay is stuck sending
    try:
        conn.send(bytes(65536))
    except BlockingIOError:
        if not select.select([], [conn], [], 1.0)[1]:
            break
print("stuck", flush=True)
select.select([conn], [], [], 30)  # until the relay resets us
"""


@pytest.fixture
def flood_pod(tmp_path):
    """A pod that writes to its one connection until the relay stops reading
    (the flood's stdout says "stuck"); its Endpoint, and its stdout."""
    port = free_port(HOSTS[1])
    out = tmp_path / "flood.out"
    with open(out, "w") as stdout:
        flood = subprocess.Popen([sys.executable, "-c", FLOOD, HOSTS[1], str(port)], stdout=stdout)
    try:
        wait_for(lambda: "listening" in out.read_text(), timeout=10, message="the flood's listener")
        yield Endpoint("flood", f"tcp://{HOSTS[1]}:{port}"), out
    finally:
        flood.kill()
        flood.wait()


def test_close_stops_every_thread(pods, feed, flood_pod):
    """Even the one blocked sending to a client that never reads."""
    pods = pods(1)
    flood, flood_out = flood_pod
    before = set(threading.enumerate())
    service = LocalService(feed).start()
    feed.publish([flood])
    with socket.socket() as sleeper:  # a client that never reads
        sleeper.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sleeper.settimeout(5)
        sleeper.connect(host_port(service.address))
        wait_for(lambda: "stuck" in flood_out.read_text(), timeout=30, message="the relay stuck sending")
        feed.publish(endpoints(pods))
        with Client(service.address) as client:  # and an idle one
            assert echo(client, 0)
            assert sorted(service.connections()) == ["flood", "pod-0"]
            started = time.monotonic()
            service.close()
            assert time.monotonic() - started < 2
    assert set(threading.enumerate()) - before == set()


def test_bytes_relayed_to_each_pod_are_counted(start_server):
    """What the notebook's "which pods did the work" reads: bytes the Service
    relayed to each pod, counted by the relay itself."""
    server = start_server("04-shutdown", host="127.0.0.2")
    feed = EndpointFeed()
    feed.publish({Endpoint("only-pod", server.endpoint)})
    with LocalService(feed) as service, Client(service.address) as client:
        for _ in range(10):
            assert client.echo([b"x" * 1000]) == [b"x" * 1000]
        wait_for(lambda: service.bytes_to_pods()["only-pod"] >= 10 * 1000, timeout=5, message="the count")
    assert set(service.bytes_to_pods()) == {"only-pod"}
