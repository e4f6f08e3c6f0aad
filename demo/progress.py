"""One line per step: "[ 5/19] NodePublishVolume ..... OK (18 ms): <what happened>".

A step is OK only when it behaved as the demo expects (an expected error included); anything
else prints FAILED with the reason and stops the run.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TextIO

from grpclib.exceptions import GRPCError

__all__ = ["Progress", "StepFailed", "describe_grpc_error"]

TITLE_WIDTH = 54


class StepFailed(Exception):
    """A step did not behave as expected; the message says what happened instead."""


def describe_grpc_error(error: GRPCError) -> str:
    return f"{error.status.name}: {error.message}"


class Progress:
    def __init__(self, total: int, out: TextIO) -> None:
        self.total = total
        self.out = out
        self.done = 0
        self.failed: str | None = None

    def _line(self, title: str, verdict: str, elapsed: float, detail: str) -> None:
        width = len(str(self.total))
        dots = "." * max(3, TITLE_WIDTH - len(title))
        counter = f"[{self.done:>{width}}/{self.total}]"
        text = f"{counter} {title} {dots} {verdict} ({elapsed * 1000:.0f} ms)"
        if detail:
            text += f": {detail}"
        print(text, file=self.out, flush=True)

    async def step(self, title: str, action: Callable[[], Awaitable[str]]) -> None:
        """Run `action`; its return value is the detail printed after OK."""
        self.done += 1
        started = time.perf_counter()
        try:
            detail = await action()
        except StepFailed as err:
            reason = str(err)
        except GRPCError as err:
            reason = f"unexpected {describe_grpc_error(err)}"
        except Exception as err:  # any other surprise is a failed step, not a traceback
            reason = f"{type(err).__name__}: {err}"
        else:
            self._line(title, "OK", time.perf_counter() - started, detail)
            return
        self.failed = f"step {self.done} ({title}): {reason}"
        self._line(title, "FAILED", time.perf_counter() - started, reason)
        raise StepFailed(self.failed)
