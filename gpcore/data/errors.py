"""Errors for bad input data: every message names the file, the problem and the fix."""
from __future__ import annotations

import os


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
