"""The benchmark client in Python, for machines without gcc or libzmq's
headers. Same modes and output as client.c; slower, so a stage may then look
faster than it is relative to the client's own limit (the report says which
client ran)."""

import resource
import sys
import time

import zmq


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(mode, endpoint, *args):
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(endpoint)
    if mode == "throughput":
        seconds, window, size = float(args[0]), int(args[1]), int(args[2])
        message = bytes(size)
        for _ in range(window):
            dealer.send(message)
        answered, cpu0, start = 0, cpu_seconds(), time.perf_counter()
        while time.perf_counter() - start < seconds:
            if not dealer.poll(5000):
                return 1
            dealer.recv()
            answered += 1
            dealer.send(message)
        print(f"{answered / (time.perf_counter() - start):.0f} {cpu_seconds() - cpu0:.3f}")
    else:
        count, size = int(args[0]), int(args[1])
        message, samples = bytes(size), []
        for _ in range(count):
            sent = time.perf_counter()
            dealer.send(message)
            if not dealer.poll(5000):
                return 1
            dealer.recv()
            samples.append((time.perf_counter() - sent) * 1e6)
        samples.sort()
        print(f"{samples[len(samples) // 2]:.1f} {samples[int(len(samples) * 0.99)]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
