"""The ``vsr`` command: one module per subcommand, each thin (parse -> call the library -> print).

Command modules import torch, PyAV and the library inside their command functions, so ``vsr --help``
(and any usage error) answers without loading them.
"""
from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import typer

from vsr import interrupt
from vsr.errors import VsrError

# Plain help (rich_markup_mode=None): typer's Rich formatter alone takes longer to import than the rest of --help.
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="4x video super-resolution with SRResNet/SRGAN generators.")


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service manager, ``timeout``, a container stop), raised in the main thread as Ctrl-C is: every
    ``with`` on the way out cleans up (temporary outputs included), and what stops cleanly on Ctrl-C (the trainer
    saves a checkpoint) does so on SIGTERM too."""


def _raise_terminated(signum: int, frame: object) -> None:
    interrupt.request(Terminated)  # raised again at the next check should this one be swallowed
    raise Terminated


def _raise_interrupted(signum: int, frame: object) -> None:
    interrupt.request(KeyboardInterrupt)
    raise KeyboardInterrupt


def _quiet_stops(previous: Callable[[Any], object]) -> Callable[[Any], object]:
    """An ``unraisablehook`` that says nothing of a stop Python swallowed (a signal's exception raised in a
    weakref callback or ``__del__``): ``interrupt`` raises it again, and the user sees one line, no traceback."""
    def hook(unraisable: Any) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            return
        previous(unraisable)
    return hook


@contextmanager
def user_errors(on_interrupt: str | Callable[[], str] = "nothing was written") -> Iterator[None]:
    """Turn library errors into one readable line and exit code 1 (130 on Ctrl-C, 143 on SIGTERM); what an
    interruption left is said by ``on_interrupt`` (a callable is asked at that moment)."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = (signal.signal(signal.SIGTERM, _raise_terminated), signal.getsignal(signal.SIGINT),
                    sys.unraisablehook)
        if previous[1] is signal.default_int_handler:  # not where Ctrl-C is ignored (a background job)
            signal.signal(signal.SIGINT, _raise_interrupted)
        sys.unraisablehook = _quiet_stops(previous[2])
    try:
        yield
    except VsrError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    except Terminated:
        typer.echo(f"terminated: {on_interrupt() if callable(on_interrupt) else on_interrupt}", err=True)
        raise typer.Exit(143) from None
    except KeyboardInterrupt:
        typer.echo(f"interrupted: {on_interrupt() if callable(on_interrupt) else on_interrupt}", err=True)
        raise typer.Exit(130) from None
    except Exception as exc:
        message = _system_error(exc)
        if message is None:
            raise
        typer.echo(f"error: {message}", err=True)
        raise typer.Exit(1) from None
    finally:
        interrupt.clear()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous[0])
            signal.signal(signal.SIGINT, previous[1])
            sys.unraisablehook = previous[2]


def _system_error(exc: Exception) -> str | None:
    """The one-line message of an FFmpeg or operating-system error (None: a bug, left to surface)."""
    av = sys.modules.get("av")  # only a command that imported PyAV can have an FFmpeg error
    if av is not None and isinstance(exc, av.FFmpegError):
        return f"FFmpeg failed: {exc}"
    if isinstance(exc, OSError):
        return f"{exc.filename or ''}: {exc.strerror or exc}"
    return None


def setup_logging(quiet: bool) -> None:
    """Library warnings go to stderr as 'warning: ...' lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    root = logging.getLogger("vsr")
    root.handlers[:] = [handler]
    root.setLevel(logging.ERROR if quiet else logging.WARNING)
    logging.addLevelName(logging.WARNING, "warning")


def register(fn: Callable) -> None:
    app.command()(fn)


from vsr.cli import bench as _bench  # noqa: E402,F401  (commands register themselves on import)
from vsr.cli import models as _models  # noqa: E402,F401
from vsr.cli import serve as _serve  # noqa: E402,F401
from vsr.cli import train as _train  # noqa: E402
from vsr.cli import upscale as _upscale  # noqa: E402,F401

app.add_typer(_train.app, name="train")


def main() -> None:
    app()
