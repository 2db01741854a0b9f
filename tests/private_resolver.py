"""A real resolver the test controls: a tiny DNS server on a loopback address,
and a command prefix that runs a process in a private mount namespace whose
/etc/resolv.conf points at it (and whose /etc/hosts does not know the name).

The process under test resolves through glibc exactly as in a pod, while the
test counts every query that reaches the DNS server.

Outside CI, a machine where this cannot be set up (no root, no unshare, port
53 taken everywhere) skips the test with the reason; with CI=true it fails.
"""

import os
import shutil
import socket
import struct
import subprocess
import threading

import pytest

TYPE_A, TYPE_AAAA = 1, 28
NXDOMAIN = 3
QUESTION_TYPES = {TYPE_A: "A", TYPE_AAAA: "AAAA"}


def unavailable(message):
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def parse_question(packet):
    """(name, type) of a query's one question; (None, None) if malformed."""
    labels, offset = [], 12
    try:
        while packet[offset]:
            length = packet[offset]
            labels.append(packet[offset + 1:offset + 1 + length].decode("ascii").lower())
            offset += 1 + length
        question_type, _ = struct.unpack_from("!HH", packet, offset + 1)
    except (IndexError, struct.error, UnicodeDecodeError):
        return None, None, offset
    return ".".join(labels), question_type, offset + 5


class TinyDNS:
    """Answers A queries for one name with one IPv4 address, says 'no such
    name' to everything else, and records each query it sees as (name, type)."""

    def __init__(self, name, address):
        self.name = name.lower()
        self.address = address
        self.queries = []
        self.socket = self._bind_on_a_free_loopback_address()
        self.ip = self.socket.getsockname()[0]
        self.socket.settimeout(0.1)  # how often the thread checks that it should stop
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @staticmethod
    def _bind_on_a_free_loopback_address():
        """Port 53 (resolv.conf has no port), on a loopback address nobody uses:
        127.0.0.53 is often systemd-resolved's."""
        for last in range(1, 60):
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                udp.bind((f"127.0.53.{last}", 53))
                return udp
            except OSError as error:
                udp.close()
                reason = error
        unavailable(f"cannot listen on UDP port 53 of any 127.0.53.x address: {reason}")

    def _serve(self):
        while not self._stopping.is_set():
            try:
                packet, peer = self.socket.recvfrom(512)
            except TimeoutError:
                continue
            reply = self._answer(packet)
            if reply:
                self.socket.sendto(reply, peer)

    def _answer(self, packet):
        name, question_type, end = parse_question(packet)
        if name is None:
            return None
        self.queries.append((name, QUESTION_TYPES.get(question_type, question_type)))
        ident, flags = struct.unpack_from("!HH", packet)
        known = name == self.name
        answers = b""
        if known and question_type == TYPE_A:
            # A pointer to the question's name, then type A, class IN, TTL, the address.
            answers = b"\xc0\x0c" + struct.pack("!HHIH", TYPE_A, 1, 60, 4) + socket.inet_aton(self.address)
        # A response, authoritative, recursion available, the query's RD bit kept.
        reply_flags = 0x8000 | 0x0400 | 0x0080 | (flags & 0x0100) | (0 if known else NXDOMAIN)
        header = struct.pack("!HHHHHH", ident, reply_flags, 1, 1 if answers else 0, 0, 0)
        return header + packet[12:end] + answers

    def queries_for(self, name):
        return [q for q in list(self.queries) if q[0] == name.lower()]

    def stop(self):
        self._stopping.set()
        self._thread.join(5)
        self.socket.close()


def private_resolver_prefix(workdir, nameserver_ip):
    """A command prefix: what follows it runs with its own view of the files
    that decide name resolution. nsswitch.conf is replaced too, so only
    /etc/hosts and then DNS are asked (no mDNS, no systemd-resolved module)."""
    files = {
        "/etc/resolv.conf": f"nameserver {nameserver_ip}\noptions timeout:1 attempts:1\n",
        "/etc/hosts": "127.0.0.1 localhost\n::1 localhost\n",
        "/etc/nsswitch.conf": "hosts: files dns\n",
    }
    mounts = []
    for target, text in files.items():
        replacement = workdir / ("private-" + target.rsplit("/", 1)[1])
        replacement.write_text(text)
        mounts.append(f"mount --bind {replacement} {target}")
    # unshare execs the shell, which execs the command: one process, the
    # command's own PID, so signals and kill() reach it directly.
    script = " && ".join(mounts) + ' && exec "$@"'
    prefix = ["unshare", "--mount", "sh", "-c", script, "private-resolver"]
    if not shutil.which("unshare"):
        unavailable("unshare is not installed (Debian package 'util-linux')")
    probe = subprocess.run([*prefix, "true"], capture_output=True, text=True, timeout=10)
    if probe.returncode != 0:
        unavailable("cannot give a process its own /etc/resolv.conf (needs root, unshare --mount "
                    f"and bind mounts): {probe.stderr.strip()}")
    return prefix
