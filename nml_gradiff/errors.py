"""User-facing errors.

Every problem caused by the input (a model file, a command-line option) is raised as a
:class:`ModelError` carrying the file, line and element it concerns.  The CLI prints it as one
line and exits with status 2; no traceback reaches the user.  Anything else that escapes is a
bug in nml-gradiff and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class ModelError(Exception):
    """An error in the user's input: bad XML, unknown type, bad option, ..."""

    def __init__(self, message: str, *, file: str | Path | None = None,
                 line: int | None = None, element: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.element = element

    def located(self, *, file=None, line=None, element=None) -> "ModelError":
        """Fill in location fields that are still unknown (inner code may not know them)."""
        if self.file is None and file is not None:
            self.file = str(file)
        if self.line is None and line is not None:
            self.line = line
        if self.element is None and element is not None:
            self.element = element
        return self

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        elem = f"<{self.element}>: " if self.element else ""
        return f"{where}{elem}{self.message}"


class UnsupportedError(ModelError):
    """A valid model using a construct nml-gradiff cannot handle (yet).

    The message always starts with ``unsupported:`` so batch reports and tests can tell
    "we cannot do this" apart from "the model is wrong".
    """

    def __init__(self, what: str, **where):
        super().__init__(f"unsupported: {what}", **where)
        self.what = what


class NothingToConvert(ModelError):
    """A valid file with nothing a backend would emit: a morphology, a file of ComponentType
    definitions, a cell without channels.  Batch conversion lists it as skipped, not failed."""

    def __init__(self, what: str, **where):
        super().__init__(f"nothing to convert: {what}", **where)
        self.what = what
