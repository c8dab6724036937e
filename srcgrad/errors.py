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


class ShapeError(SrcgradError, ValueError):
    """Array shapes do not fit together in the differentiated function (or in a derivative rule).

    Raised by both targets, in the forward or the reverse sweep. The message names the user's file,
    line and function, the source text of that line and the shapes involved where known::

        test_arrays.py, line 605 in bad_matmul: h = a @ b: shapes (3, 4) and (5, 2) are not aligned
          File "/.../tests/test_arrays.py", line 605, in bad_matmul

    Attributes: ``filename``, ``lineno``, ``function``, ``line_text``, ``shapes`` (tuples, or None
    where unknown), ``sweep`` (``"forward"`` or ``"reverse"``), ``callers`` (``(filename, lineno,
    function, line_text)`` of the calls that led there, outermost first) and ``original`` (the
    NumPy message the python target gave).
    """

    def __init__(self, detail, filename, lineno, function, line_text, shapes=None, sweep="forward",
                 callers=(), original=None):
        import os
        self.detail = detail
        self.filename = filename
        self.lineno = lineno
        self.function = function
        self.line_text = line_text
        self.shapes = shapes
        self.sweep = sweep
        self.callers = tuple(callers)
        self.original = original
        where = "in the reverse sweep (the derivative of this line): " if sweep == "reverse" else ""
        lines = [f"{os.path.basename(filename)}, line {lineno} in {function}: {line_text}: {where}{detail}",
                 f'  File "{filename}", line {lineno}, in {function}']
        if sweep == "reverse":
            lines.append("  (the line itself ran; its derivative did not: check the derivative rule if "
                         "this line calls a function with a registered rule, else please report it as "
                         "a srcgrad bug)")
        for file, line, func, text in reversed(self.callers):
            lines.append(f'  called from File "{file}", line {line}, in {func}: {text}')
        super().__init__("\n".join(lines))


class DTypeError(SrcgradError, TypeError):
    """An array or scalar argument has a dtype the call does not accept (e.g.
    ``MinibatchLoop(...)(..., x_scale=...)`` with samples that are not integers)."""


class FusionGuardFailed(SrcgradError):
    """Raised by a fused loop nest of a cpu specialization compiled without its fallback branches
    when its size test fails (an operand stretched along a size-1 axis, or sizes that do not match).

    Internal: ``GradFunction`` catches it and reruns the call with the specialization that keeps
    the statements as written under each guard's ``else:`` (NumPy's broadcasting and NumPy's
    errors), compiled only then. It reaches a user only who calls a specialization's compiled
    functions directly.
    """
