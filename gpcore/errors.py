"""One-line errors for every command (``gpcore <command>``, ``run_all.sh``, ``gpcore.study.report``).

The project's own errors - bad data (:class:`gpcore.data.errors.DataError`), a bad weights
file or Hub name (:class:`gpcore.models.checkpoints.CheckpointError`), a missing file or run,
a bad value in a config or on the command line - already say what is wrong and how to fix it.
A user should read that sentence, not a traceback: :func:`one_line_errors` prints
``<prog>: error: <message>`` and exits non-zero; ``--debug`` (or ``GPCORE_DEBUG=1``) keeps the
traceback for developers. Anything else (a bug) still raises with its traceback.
"""
from __future__ import annotations

import os
from contextlib import contextmanager

#: exit status of a command stopped by bad input (argparse's for a bad command line)
EXIT_BAD_INPUT = 2


class ConfigError(ValueError):
    """A profile or config file (or a KEY=VALUE override) cannot be used; the message names
    the file or key and the fix."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types whose message is meant for the user."""
    from .data.errors import DataError
    from .models.checkpoints import CheckpointError

    return (DataError, CheckpointError, ConfigError, FileNotFoundError, FileExistsError,
            NotADirectoryError, IsADirectoryError, PermissionError, ValueError)


def message(err: BaseException) -> str:
    """The first line of ``err``'s message (the type's name when it has none)."""
    text = str(err).strip()
    if isinstance(err, OSError) and err.filename and str(err.filename) not in text:
        text = f"{err.filename}: {err.strerror or text}"
    return text.splitlines()[0] if text else type(err).__name__


def debug_requested(flag: bool = False) -> bool:
    return bool(flag) or os.environ.get("GPCORE_DEBUG", "") not in ("", "0")


@contextmanager
def one_line_errors(prog: str, debug: bool = False):
    """Turn the project's own errors raised inside the block into ``prog: error: message``
    on stderr and exit status :data:`EXIT_BAD_INPUT` (``SystemExit``)."""
    try:
        yield
    except user_errors() as err:
        if debug_requested(debug):
            raise
        import sys

        print(f"{prog}: error: {message(err)}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT) from None


def standalone_main(prog: str, description: str | None, add_arguments, run,
                    argv: list[str] | None = None) -> int:
    """The ``python -m`` entry of a command whose sub-command lives in ``gpcore``: its own
    parser (``add_arguments``) plus ``--debug``, then ``run(args)`` with one-line errors."""
    import argparse

    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    args = parser.parse_args(argv)
    with one_line_errors(prog, args.debug):
        return run(args)
