"""SIGTERM unwinds like Ctrl-C, so every `finally` stops what it started: the
driver's command line and each scenario run's child process use this."""

import signal


def stop_on_sigterm():
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)
