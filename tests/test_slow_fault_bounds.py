"""With ECHO_FAULTS=1, slow:<ms> makes the loop sleep, up to a minute. A number
beyond that is not obeyed: the message is simply echoed. Even a number too
big to sleep for must not crash the replica. (One too long for int() — over
4,300 digits — cannot reach the fault code: it is over the stages' message
limit, which test_bad_input.py covers.)"""

import pytest

from support import STAGES, Client

pytestmark = pytest.mark.parametrize("stage", STAGES)

# A float cannot hold a number of 400 digits (OverflowError): it once crashed
# the loop. 400 digits fit in a stage's message limit (1 kB).
UNSLEEPABLE = [b"__fault__", b"slow:" + b"9" * 400]


def assert_still_answers(server):
    with Client(server.endpoint) as other:
        assert other.echo([b"still there?"]) == [b"still there?"]
    assert server.running()


def test_slow_over_a_minute_is_echoed_at_once(stage, start_server):
    server = start_server(stage, ECHO_FAULTS=1)
    with Client(server.endpoint) as client:
        assert client.echo([b"__fault__", b"slow:60001"], timeout_ms=2000) == [b"__fault__", b"slow:60001"]


def test_slow_with_a_number_too_big_to_sleep_for_is_echoed_at_once(stage, start_server):
    server = start_server(stage, ECHO_FAULTS=1)
    with Client(server.endpoint) as client:
        assert client.echo(UNSLEEPABLE, timeout_ms=2000) == UNSLEEPABLE
    assert_still_answers(server)

