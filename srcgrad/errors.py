"""Exceptions raised by srcgrad.

Every error a user can meet is one of these (or a plain TypeError/ValueError for bad arguments),
so that ``except srcgrad.SrcgradError`` catches everything srcgrad itself refuses to do.
"""


class SrcgradError(Exception):
    """Base class: srcgrad cannot differentiate or compile what it was given."""


class UnsupportedSyntaxError(SrcgradError):
    """The function uses a construct outside the differentiable subset.

    The message names the file, the line and the construct.
    """

    def __init__(self, message, filename=None, lineno=None, construct=None):
        self.filename = filename
        self.lineno = lineno
        self.construct = construct
        where = ""
        if filename is not None:
            where = f"{filename}:{lineno}: " if lineno is not None else f"{filename}: "
        super().__init__(where + message)
