"""Errors for bad input data: every message names the file, the problem and the fix."""
from __future__ import annotations

import os
import warnings


class DataError(ValueError):
    """A data file cannot be used.

    ``str(err)`` reads ``"<path>: <problem>; <fix>"``, e.g.
    ``"BraTS20_Training_012_seg.nii.gz: unexpected label 3; BraTS 2020 uses 0, 1, 2, 4"``.
    """

    def __init__(self, path: str | os.PathLike, problem: str, fix: str = ""):
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.path}: {problem}" + (f"; {fix}" if fix else ""))

    def __reduce__(self):  # survive pickling across worker processes
        return (type(self), (self.path, self.problem, self.fix))


ON_ERROR = ("stop", "skip")


def check_on_error(on_error: str) -> None:
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")


def report(err: DataError, on_error: str, skipped: list | None) -> None:
    """``"stop"``: raise ``err``; ``"skip"``: append it to ``skipped`` (or warn if no list)."""
    if on_error == "stop":
        raise err
    if skipped is None:
        # nobody collects the problems: do not lose them silently
        warnings.warn(f"skipped: {err}", stacklevel=3)
    else:
        skipped.append(err)
