"""Why a lost request was lost (workshop/losses.py), read from a pod's life:
each cause on a history made for it. (The scoreboard's tests read the causes
of real runs; these pin down what each cause means.)"""

from workshop.backends.base import ContainerRun, PodHistory
from workshop.losses import lost_by_cause

A, B = "tcp://10.0.0.1:5555", "tcp://10.0.0.2:5555"
TIMEOUT_S = 1.0
START = 100.0  # when the load's clock started, on the backend's clock


def pod(name, address, created, runs, deleted=None):
    return PodHistory(name, address, created_at=START + created, deleted_at=deleted and START + deleted,
                      runs=[ContainerRun(START + s, e and START + e, reason) for s, e, reason in runs])


def causes(samples, pods, struck=None):
    if struck:
        struck = (struck[0], START + struck[1], struck[2])
    return lost_by_cause(samples, pods, START, TIMEOUT_S, struck)


def test_sent_with_no_endpoint_known():
    assert causes([(1.0, None, None)], []) == {"no-endpoint": 1}


def test_sent_to_a_pod_being_deleted_whose_container_then_stopped():
    going = pod("a", A, -5, [(-5, 3.2, "Error")], deleted=3.0)
    assert causes([(1.0, 0.001, A), (3.1, None, A)], [going]) == {"going-away": 1}


def test_sent_to_a_deleted_pod_after_its_container_ended():
    gone = pod("a", A, -5, [(-5, 3.0, "Completed")], deleted=2.9)
    assert causes([(3.2, None, A)], [gone]) == {"going-away": 1}


def test_sent_to_a_container_that_died_without_its_pod_being_deleted():
    crashed = pod("a", A, -5, [(-5, 2.5, "Error"), (2.6, None, None)])
    assert causes([(1.0, 0.001, A), (2.0, None, A), (2.55, None, A)], [crashed]) == {"killed": 2}


def test_sent_to_a_container_not_listening_yet():
    slow = pod("a", A, -1, [(-1, None, None)])
    samples = [(0.0, None, A), (1.5, 0.0005, A)]  # its first answer arrived at 1.5 s, after the first's deadline
    assert causes(samples, [slow]) == {"not-listening": 1}


def test_a_listening_healthy_pod_that_lost_a_request_is_unexplained():
    healthy = pod("a", A, -5, [(-5, None, None)])
    assert causes([(1.0, 0.0005, A), (2.0, None, A), (3.0, 0.0005, A)], [healthy]) == {"unexplained": 1}


def test_the_hung_replica_until_its_container_ends_then_its_restart_is_its_own():
    hung = pod("a", A, -5, [(-5, 20.0, "Error"), (20.0, None, None)])
    samples = [(0.5, 0.0005, A), (5.0, None, A), (19.9, None, A), (20.1, None, A), (21.5, 0.0005, A)]
    assert causes(samples, [hung], struck=("a", 1.0, "hung")) == {"hung": 2, "not-listening": 1}


def test_the_attacked_replica_over_every_container_it_had_from_the_attack_on():
    attacked = pod("a", A, -5, [(-5, 3.0, "OOMKilled"), (3.1, 6.0, "OOMKilled"), (6.1, None, None)])
    samples = [(0.5, 0.0005, A), (2.0, None, A), (5.5, None, A), (7.0, None, A)]
    assert causes(samples, [attacked], struck=("a", 1.0, "attacked")) == {"attacked": 3}


def test_an_address_used_again_belongs_to_the_pod_that_had_it_when_the_request_was_sent():
    old = pod("old", A, -10, [(-10, -1, "Completed")], deleted=-2)
    new = pod("new", A, 0, [(0, None, None)])
    assert causes([(0.5, None, A), (2.0, 0.0005, A)], [old, new]) == {"not-listening": 1}


def test_requests_to_other_pods_keep_their_own_causes():
    crashed = pod("a", A, -5, [(-5, 2.5, "Error"), (2.6, None, None)])
    healthy = pod("b", B, -5, [(-5, None, None)])
    samples = [(1.0, 0.0005, B), (2.2, None, A), (2.2, None, B), (3.0, 0.0005, B)]
    assert causes(samples, [crashed, healthy]) == {"killed": 1, "unexplained": 1}
