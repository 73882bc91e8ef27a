"""Two hosts on one machine for integration tests: a network namespace joined to this one by a
veth pair (needs root and iproute2; ``two_hosts`` yields None where that is not allowed)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator


@dataclass(frozen=True)
class RemoteHost:
    """The other host: its namespace, its address and ours, and the veth end on our side."""

    namespace: str
    address: str
    local_address: str
    local_link: str

    def prefix(self) -> list[str]:
        """Command prefix that runs a program on the other host."""
        return ["ip", "netns", "exec", self.namespace]

    def bytes_received(self) -> int:
        """Bytes our side of the link received from the other host."""
        return int(open(f"/sys/class/net/{self.local_link}/statistics/rx_bytes").read())

    def bytes_sent(self) -> int:
        return int(open(f"/sys/class/net/{self.local_link}/statistics/tx_bytes").read())


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _remove_stale() -> None:
    """Namespaces ``ap<pid>`` left by a test process that was killed before its clean-up hold the
    same addresses: traffic to the new namespace would go to the dead one."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for name in (line.split()[0] for line in listed.splitlines() if line.strip()):
        if re.fullmatch(r"ap\d+", name) and not os.path.exists(f"/proc/{name[2:]}"):
            subprocess.run(["ip", "link", "del", f"{name}a"], capture_output=True)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@contextmanager
def two_hosts(subnet: int = 0) -> Iterator[RemoteHost | None]:
    """A namespace ``ap<pid>`` at 10.213.<subnet>.2 reachable from here at 10.213.<subnet>.1."""
    tag = f"ap{os.getpid()}"  # at most 10 characters with its suffix: within the 15 of a link name
    namespace, link = tag, f"{tag}a"
    local, remote = f"10.213.{subnet}.1", f"10.213.{subnet}.2"
    if shutil.which("ip") is None or os.geteuid() != 0:
        yield None
        return
    _remove_stale()
    try:
        _ip("netns", "add", namespace)
        _ip("link", "add", link, "type", "veth", "peer", "name", f"{tag}b")
        _ip("link", "set", f"{tag}b", "netns", namespace)
        _ip("addr", "add", f"{local}/24", "dev", link)
        _ip("link", "set", link, "up")
        _ip("netns", "exec", namespace, "ip", "addr", "add", f"{remote}/24", "dev", f"{tag}b")
        _ip("netns", "exec", namespace, "ip", "link", "set", f"{tag}b", "up")
        _ip("netns", "exec", namespace, "ip", "link", "set", "lo", "up")
        host: RemoteHost | None = RemoteHost(namespace, remote, local, link)
    except subprocess.CalledProcessError:  # not allowed here (no CAP_NET_ADMIN, no veth): one host only
        host = None
    try:
        yield host
    finally:
        subprocess.run(["ip", "link", "del", link], capture_output=True)
        subprocess.run(["ip", "netns", "del", namespace], capture_output=True)
