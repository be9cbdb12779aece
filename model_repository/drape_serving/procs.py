"""Process helpers the launchers share (Triton in ``server``, nginx in ``gateway``): free ports, die with parent.

Standard library only. One home, so the launchers import it and not each other.
"""

from __future__ import annotations

import ctypes
import signal
import socket

__all__ = ["free_ports", "free_port", "die_with_parent"]


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct currently-free TCP ports (all sockets held until every port is picked)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port(host: str = "127.0.0.1") -> int:
    """One currently-free TCP port (for tests; another process may still take it before use)."""
    return free_ports(1, host)[0]


def die_with_parent() -> None:
    """Child-side: ask Linux to SIGTERM this child (tritonserver, nginx) if the launching thread dies."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
