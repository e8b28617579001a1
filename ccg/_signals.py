"""Graceful stops: SIGINT / SIGTERM become a request that a long loop checks between steps.

    with stop_requests() as stop:
        while not done:
            one_step()
            if stop.requested:
                save(); raise Interrupted(stop.signum, ...)

The handlers are installed only in the main thread and only by the outermost `stop_requests`
(a cycle and the trainer inside it share one request); the previous handlers come back on
exit. A second signal while a stop is pending raises KeyboardInterrupt at once, for a user who
will not wait for the current step.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Whether (and by which signal) a stop was requested."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum


_active: StopRequest | None = None


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequest]:
    """Record SIGINT / SIGTERM in the yielded `StopRequest` instead of stopping at once."""
    global _active
    if _active is not None:  # nested: the outer loop owns the handlers
        yield _active
        return
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request  # signals only reach the main thread: nothing to install
        return
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, request._handle)
    _active = request
    try:
        yield request
    finally:
        _active = None
        for s, handler in previous.items():
            signal.signal(s, handler)
