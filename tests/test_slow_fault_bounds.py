"""With ECHO_FAULTS=1, slow:<ms> makes the loop sleep, up to a minute. A number
beyond that is not obeyed: the message is simply echoed. Even a number too
big to sleep for, or to parse at all, must not crash the replica."""

import pytest

from support import STAGES, Client

pytestmark = pytest.mark.parametrize("stage", STAGES)

# A float cannot hold a number of 400 digits (OverflowError) and int() refuses
# a string of more than 4300 (ValueError): each once crashed the loop. 400
# digits still fit in a stage's size limit (1 kB at the smallest).
UNSLEEPABLE = [b"__fault__", b"slow:" + b"9" * 400]
UNPARSABLE = [b"__fault__", b"slow:" + b"9" * 5000]


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


def test_slow_with_a_number_too_long_to_parse_does_not_crash(stage, start_server):
    server = start_server(stage, ECHO_FAULTS=1)
    with Client(server.endpoint) as client:
        # Echoed; or dropped unanswered by a stage whose size limit is under
        # 5 kB, so the wait is short: on loopback an echo takes a millisecond.
        reply = client.echo(UNPARSABLE, timeout_ms=500)
    assert reply in (UNPARSABLE, None)
    assert_still_answers(server)
