"""The workshop's fault switch and slow start: not part of any lesson.

Every stage carries this file unchanged (a test keeps the copies identical),
so the scenarios can break one replica the same way on every backend — a
real cluster included, where nobody outside can freeze a container's PID 1.

  ECHO_STARTUP_DELAY  seconds to sleep when this module is imported, before
                      the server binds: a slow start (default 0)
  ECHO_FAULTS=1       obey fault messages [b"__fault__", command], command
                      crash, hang or slow:<ms> (up to a minute; more is not
                      obeyed). Off by default: then a fault message is echoed
                      like any other

A bad value of either is reported in one line on stderr, exit code 2.
"""

import os
import sys
import time


def _setting(name, default, allowed, expected):
    text = os.environ.get(name, default)
    if not allowed(text):
        print(f"bad setting {name}={text!r}: expected {expected} (the workshop's switch)", file=sys.stderr,
              flush=True)
        sys.exit(2)
    return text


ENABLED = _setting("ECHO_FAULTS", "0", lambda text: text in ("0", "1"), "0 or 1") == "1"
_delay = _setting("ECHO_STARTUP_DELAY", "0",
                  lambda text: text.isascii() and text.replace(".", "", 1).isdigit() and float(text) <= 3600,
                  "seconds, 0 to 3600")
time.sleep(float(_delay))


def obey(frames):
    """Act on a fault message, [identity, (b"" from REQ,) b"__fault__", command];
    return at once for anything else."""
    if not ENABLED:
        return
    body = frames[1:]
    if body[:1] == [b""]:
        body = body[1:]
    if len(body) != 2 or body[0] != b"__fault__":
        return
    command = body[1]
    if command == b"crash":
        raise RuntimeError("fault injected: crash")
    if command == b"hang":
        while True:  # the process lives, its loop does not
            time.sleep(3600)
    delay_ms = command.removeprefix(b"slow:")
    if command != delay_ms and delay_ms.isdigit() and len(delay_ms) <= 5 and int(delay_ms) <= 60_000:
        time.sleep(int(delay_ms) / 1000)
