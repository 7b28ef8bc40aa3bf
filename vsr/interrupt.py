"""A stop that a signal asked for, kept until it is acted on.

A signal handler raises its exception (Ctrl-C's KeyboardInterrupt, SIGTERM's) at whatever bytecode the main
thread is running; when that is a weakref callback or a ``__del__`` (the garbage collector's), Python prints
"Exception ignored" and the stop is lost. So the handler also records it here, and the long loops (a
segment's frames, training steps, a benchmark's frames) call :func:`check`, which raises it again.
"""
from __future__ import annotations

_pending: type[BaseException] | None = None


def request(exc_type: type[BaseException]) -> None:
    """Record a stop (called by the signal handler, which then raises ``exc_type`` itself)."""
    global _pending
    _pending = exc_type


def check() -> None:
    """Raise the recorded stop, if one is pending (it is then cleared: it is on its way up)."""
    global _pending
    if _pending is not None:
        exc_type, _pending = _pending, None
        raise exc_type


def clear() -> None:
    """Forget a recorded stop (it was handled)."""
    global _pending
    _pending = None
