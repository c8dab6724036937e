"""Placeholders the reverse transformation (:mod:`srcgrad.transform`) leaves in its output.

The sweep does not yet know which overwritten values the reverse sweep will read, nor whether an
adjoint stays a single-use temporary, so it emits placeholders that :mod:`srcgrad.tape` resolves
once the whole function is transformed:

* :class:`Save` / :class:`Restore` — a push of a value before it is overwritten, and its pop;
* :class:`Reset` — zero an adjoint after its assignment was reversed (a loop assigns it again);
* :class:`Comment` — a comment line in the generated code (kept to the end: codegen prints it).
"""
import ast


class Save:
    """Placeholder in the forward sweep: push ``name``'s old value if the reverse sweep needs it.

    ``index``: the slot of an element write (``name[index] = ...``), else None. ``like``: the
    statement whose location generated code takes. ``loop``: the id of the innermost loop body the
    assignment is in (None outside loops). ``always``: pushed whatever the liveness analysis says
    (trip counts of inner while loops, iteration-start states of recomputed loops). ``covers``: the
    element saves a whole-array snapshot replaces (:mod:`srcgrad.step_snapshots`). ``written``:
    (lo, hi) of a step snapshot written in place, the run of slots the step writes (else None)."""

    def __init__(self, name, kind, index=None, like=None, loop=None, always=False, covers=()):
        self.name, self.kind, self.index, self.like = name, kind, index, like
        self.loop, self.always, self.covers = loop, always, tuple(covers)
        self.written = None


class Restore:
    """Placeholder in the reverse sweep, matching a :class:`Save`."""

    def __init__(self, save):
        self.save = save


class Reset(ast.stmt):
    """Placeholder: zero ``name``'s adjoint after its assignment was reversed (a loop assigns it
    again), unless it turned out to be a single-use temporary whose adjoint is assigned, not added."""
    _fields = ()

    def __init__(self, name, kind, like):
        super().__init__()
        self.name, self.kind, self.like = name, kind, like


class Comment(ast.stmt):
    """A comment line in generated code: the source line an adjoint block differentiates."""
    _fields = ("text", "lineno_src")

    def __init__(self, text, lineno_src):
        super().__init__()
        self.text = text
        self.lineno_src = lineno_src

    def __deepcopy__(self, memo):        # (ast's copy protocol would call __init__ without arguments)
        twin = Comment(self.text, self.lineno_src)
        twin.__dict__.update({k: v for k, v in self.__dict__.items() if k not in ("text", "lineno_src")})
        return twin


# the historical names (codegen, lower and forward import them from transform)
_Reset = Reset
_Comment = Comment
