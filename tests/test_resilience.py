"""The client's half (workshop/resilience.py): deadlines, retries where safe,
a retry budget, ejection. Its parts alone, then the load generator in
resilient mode against real replicas (stage 01 processes on loopback), one
of them hung or all of them slow."""

import pytest

from workshop.client import send_fault
from workshop.feed import Endpoint, EndpointFeed
from workshop.load_generator import LoadGenerator
from workshop.resilience import Outliers, Resilience, RetryBudget
from workshop.slow_replica import SlowReplicas

POLICY = Resilience()
RATE = 150


# -- ejection --

def test_three_time_outs_in_a_row_eject_an_endpoint_for_its_back_off():
    outliers = Outliers(POLICY)
    for _ in range(POLICY.eject_after - 1):
        outliers.timed_out("a", now=10.0)
    assert outliers.usable("a", 10.0)
    outliers.timed_out("a", now=10.0)
    assert not outliers.usable("a", 10.0 + POLICY.backoff_s - 0.01) and outliers.ejected == 1
    assert outliers.usable("b", 10.0), "the others stay in"


def test_an_answer_between_time_outs_starts_the_count_again():
    outliers = Outliers(POLICY)
    for _ in range(POLICY.eject_after * 3):
        outliers.timed_out("a", now=1.0)
        outliers.answered("a")
    assert outliers.usable("a", 1.0) and outliers.ejected == 0


def test_after_its_back_off_one_request_probes_it_and_an_answer_lets_it_back():
    outliers = Outliers(POLICY)
    for _ in range(POLICY.eject_after):
        outliers.timed_out("a", now=0.0)
    back = POLICY.backoff_s
    assert outliers.usable("a", back)
    outliers.sending("a")
    assert not outliers.usable("a", back), "one probe at a time"
    outliers.answered("a")
    assert outliers.usable("a", back) and outliers.usable("a", back + 0.001)


def test_a_failed_probe_ejects_it_again_for_twice_as_long_up_to_the_cap():
    outliers = Outliers(POLICY)
    for _ in range(POLICY.eject_after):
        outliers.timed_out("a", now=0.0)
    now, expected = 0.0, POLICY.backoff_s
    for _ in range(6):
        now += expected
        outliers.sending("a")
        outliers.timed_out("a", now=now)  # the probe timed out: out again at once
        expected = min(POLICY.max_backoff_s, expected * 2)
        assert not outliers.usable("a", now + expected - 0.01) and outliers.usable("a", now + expected)
    assert expected == POLICY.max_backoff_s


# -- the retry budget --

def test_the_budget_allows_a_share_of_the_last_seconds_requests_plus_a_few():
    budget = RetryBudget(POLICY)
    for i in range(100):
        budget.sent(5.0 + i / 100)
    allowed = 0
    while budget.allows(5.99):
        budget.retried(5.99)
        allowed += 1
    assert allowed == 100 * POLICY.budget_ratio + POLICY.budget_min
    assert budget.allows(7.0), "a second later, those requests and retries are forgotten"


def test_without_a_budget_every_retry_is_allowed():
    budget = RetryBudget(Resilience(budget_ratio=None))
    for _ in range(1000):
        budget.retried(1.0)
    assert budget.allows(1.0)


# -- against real replicas --

@pytest.fixture
def replicas(start_server):
    servers = [start_server("01-plain", ECHO_FAULTS=1) for _ in range(3)]
    feed = EndpointFeed()
    feed.publish(Endpoint(f"echo-{i}", s.endpoint) for i, s in enumerate(servers))
    return feed, [s.endpoint for s in servers]


def test_a_hung_replica_costs_the_resilient_client_nothing(replicas):
    feed, (hung, *others) = replicas
    send_fault(hung, "hang")
    result = LoadGenerator(feed, rate=RATE, resilience=POLICY).run(3)
    assert result.lost == 0 and result.answered == result.sent
    assert result.ejections >= 2, "ejected, probed after its back-off, ejected again"
    assert 0 < result.retries <= POLICY.budget_ratio * result.sent + POLICY.budget_min * 3
    answered_by = {s[2] for s in result.samples}
    assert hung not in answered_by and set(others) <= answered_by


def test_the_same_hang_loses_what_the_plain_client_sends_it(replicas):
    feed, (hung, *_) = replicas
    send_fault(hung, "hang")
    result = LoadGenerator(feed, rate=RATE).run(3)
    assert result.lost >= result.sent / 3 * 0.8 and result.retries == 0
    assert {s[2] for s in result.samples if s[1] is None} == {hung}


def test_no_budget_left_no_retry_the_attempt_waits_on_and_is_lost(replicas):
    feed, (hung, *_) = replicas
    send_fault(hung, "hang")
    result = LoadGenerator(feed, rate=RATE, resilience=Resilience(budget_ratio=0, budget_min=0)).run(2)
    assert result.retries == 0 and result.lost > 0, "ejection alone still loses what the hung one had"
    assert result.lost < result.sent / 3 * 0.5, "...but ejection keeps new requests away from it"


@pytest.fixture
def slow_replicas():
    with SlowReplicas(delay_s=0.15) as replicas:  # past every 0.1 s deadline
        yield replicas.feed


def test_every_replica_slower_than_the_deadline_without_a_budget_is_a_retry_storm(slow_replicas):
    """The budget's point: when every replica is slow, a retry helps no one
    and adds load. Without a budget every request is sent twice (its first
    reply comes 50 ms after its retry); with one, a tenth more."""
    storm = LoadGenerator(slow_replicas, rate=RATE, resilience=Resilience(budget_ratio=None)).run(2)
    budgeted = LoadGenerator(slow_replicas, rate=RATE, resilience=POLICY).run(2)
    assert storm.lost == 0 and budgeted.lost == 0, "the first replies come all the same"
    assert storm.retries >= 0.9 * storm.sent, "about one retry per request: twice the load"
    assert budgeted.retries <= POLICY.budget_ratio * budgeted.sent + POLICY.budget_min * 3
