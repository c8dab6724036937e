"""Which functions Numba compiles, and how long each one takes (issue 17: compile latency).

:class:`CompileRecorder` listens to Numba's ``numba:compile`` events. Compiles nest (typing a
function compiles the functions it calls first), so for every compile it keeps the **total**
seconds between its start and end events and its **own** seconds: the total less its callees'
totals. The own seconds of all records add up to the time spent compiling, counted once. Seconds
are CPU seconds of this process (``time.process_time``; on a machine shared with other jobs they
grow much less than the wall clock), with the wall seconds beside them.

Each record names the srcgrad **program** it was compiled for: the generated module
(``srcgrad_<function>_<hash>``, see ``codegen.module_path``) of the function itself or, for a
runtime helper or a user's jitted callee, of the outermost compile it happened in (``None`` for a
compile outside any generated module, e.g. a helper a test calls directly).

Used by ``benchmarks/train_compile_bench.py`` and by the test suite's opt-in report
(``SRCGRAD_COMPILE_REPORT=path`` in ``tests/conftest.py``). Nothing here imports Numba until
:meth:`CompileRecorder.install` is called.
"""
import time

GENERATED_PREFIX = "srcgrad_"       # codegen.module_path: srcgrad_<stem>_<key>.py


def program_of(module_name):
    """The generated module ``module_name`` names, or None (srcgrad's own modules are
    ``srcgrad.<...>``, with a dot; generated ones ``srcgrad_<stem>_<key>``)."""
    if module_name and module_name.startswith(GENERATED_PREFIX):
        return module_name
    return None


class CompileRecorder:
    """Records every Numba compile between :meth:`install` and :meth:`uninstall`.

    ``records``: one dict per compile, in the order they ended: ``name`` (module.qualname),
    ``args`` (Numba's argument types as text), ``own_s``/``total_s`` (CPU), ``own_wall_s``/
    ``total_wall_s``, ``program`` (see the module docstring) and ``context`` (whatever the caller
    set ``self.context`` to when the compile started: the test suite sets the test's id).
    """

    def __init__(self):
        self.records = []
        self.context = None
        self._stack = []
        self._listener = None

    def install(self):
        from numba.core import event

        recorder = self

        class _Listener(event.Listener):
            def on_start(self, ev):
                recorder._start(ev)

            def on_end(self, ev):
                recorder._end(ev)

        self._listener = _Listener()
        event.register("numba:compile", self._listener)
        return self

    def uninstall(self):
        if self._listener is not None:
            from numba.core import event

            event.unregister("numba:compile", self._listener)
            self._listener = None

    def _start(self, ev):
        data = ev.data or {}
        py_func = getattr(data.get("dispatcher"), "py_func", None)
        module = getattr(py_func, "__module__", None) or "?"
        name = f"{module}.{getattr(py_func, '__qualname__', '?')}"
        program = program_of(module)
        if program is None and self._stack:
            program = self._stack[0]["program"]
        self._stack.append({"name": name, "args": str(data.get("args", "")), "program": program,
                            "context": self.context, "cpu": time.process_time(),
                            "wall": time.perf_counter(), "nested_cpu": 0.0, "nested_wall": 0.0})

    def _end(self, ev):
        if not self._stack:            # installed in the middle of a compile
            return
        frame = self._stack.pop()
        total = time.process_time() - frame["cpu"]
        total_wall = time.perf_counter() - frame["wall"]
        if self._stack:
            self._stack[-1]["nested_cpu"] += total
            self._stack[-1]["nested_wall"] += total_wall
        self.records.append({
            "name": frame["name"], "args": frame["args"], "program": frame["program"],
            "context": frame["context"], "own_s": round(total - frame["nested_cpu"], 4),
            "total_s": round(total, 4), "own_wall_s": round(total_wall - frame["nested_wall"], 4),
            "total_wall_s": round(total_wall, 4)})

    def programs(self):
        """Per program: own CPU seconds of every compile made for it, the compile count, and the
        contexts (tests) it was compiled in, largest first."""
        out = {}
        for r in self.records:
            entry = out.setdefault(r["program"], {"program": r["program"], "own_s": 0.0,
                                                  "compiles": 0, "contexts": []})
            entry["own_s"] += r["own_s"]
            entry["compiles"] += 1
            if r["context"] not in entry["contexts"]:
                entry["contexts"].append(r["context"])
        return sorted(out.values(), key=lambda e: -e["own_s"])


def markdown(records, programs, top=40, title="Numba compiles"):
    """A markdown summary: the ``top`` compiles by own CPU seconds, then the programs."""
    total = sum(r["own_s"] for r in records)
    lines = [f"## {title}: {len(records)} compiles, {total:.1f} s CPU in all", "",
             f"The {min(top, len(records))} largest by own CPU seconds (the compile less its "
             "callees'):", "",
             "| own CPU s | total CPU s | function | argument types | program | test |",
             "|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: -r["own_s"])[:top]:
        lines.append(f"| {r['own_s']:.2f} | {r['total_s']:.2f} | `{r['name']}` | "
                     f"{r['args'][:70]} | `{r['program']}` | `{r['context']}` |")
    lines += ["", "Programs by the own CPU seconds of all their compiles:", "",
              "| CPU s | compiles | program | tests |", "|---|---|---|---|"]
    for p in programs[:top]:
        tests = ", ".join(f"`{c}`" for c in p["contexts"][:3])
        more = f" (+{len(p['contexts']) - 3})" if len(p["contexts"]) > 3 else ""
        lines.append(f"| {p['own_s']:.2f} | {p['compiles']} | `{p['program']}` | {tests}{more} |")
    return "\n".join(lines) + "\n"
