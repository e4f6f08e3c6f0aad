"""Waiting for a unix-socket server to see its clients go."""

from __future__ import annotations

import asyncio
from pathlib import Path


def _sockets_bound_to(path: Path) -> int:
    with open("/proc/net/unix", encoding="utf-8") as table:
        return sum(1 for line in table if line.rstrip("\n").endswith(" " + str(path)))


async def server_connections_closed(path: Path, timeout: float = 10.0) -> None:
    """Until the server has seen every client connection close.

    grpcio closes its socket from a core thread after `channel.close()`, and asyncio (3.11)
    keeps an accepted connection's transport until it reads that EOF; a test that ends first
    leaves an unclosed transport behind.  Accepted sockets carry the listening path in
    /proc/net/unix, so the kernel says when they are all gone.
    """
    async with asyncio.timeout(timeout):
        while _sockets_bound_to(path):
            await asyncio.sleep(0.005)
