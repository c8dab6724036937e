"""CUDA graphs: record a fixed sequence of kernel launches once, replay it with one launch.

Why: a training step is a dozen small kernels, and at MNIST's batch sizes each kernel runs for a
few microseconds while a Numba launch costs tens of microseconds of host time.  Replaying a
captured graph costs about a microsecond per kernel on the device and one call on the host.

numba-cuda has no graph API, so this module calls the CUDA driver through ``cuda.bindings`` (the
NVIDIA bindings numba-cuda itself uses).  Capture is stream capture: every launch made while
recording must go to the recording stream (the launch helpers of :mod:`srcgrad.cuda.kernels` and
:meth:`srcgrad.cuda.array_plan.CompiledPlan.run` take ``stream=``), must not allocate, copy
synchronously or read results back, and the kernels must already be compiled and loaded (run the
same launches once eagerly first).

    graph = StreamGraph.capture(stream, lambda: launch_everything(stream))
    graph.launch(stream)            # replays every recorded launch, same arguments
    graph.close()

The simulator has no driver: :func:`available` says so and :meth:`StreamGraph.capture` raises
:class:`GraphUnavailable`, which callers turn into eager launches.
"""

from __future__ import annotations

from .device import SIMULATOR


class GraphUnavailable(RuntimeError):
    """CUDA graphs cannot be used here (the simulator, or no driver bindings)."""


def _driver():
    if SIMULATOR:
        raise GraphUnavailable("the CUDA simulator has no graphs")
    try:
        from cuda.bindings import driver
    except ImportError:
        try:
            from cuda import cuda as driver      # cuda-python before the bindings package split
        except ImportError as exc:
            raise GraphUnavailable(f"no CUDA driver bindings ({exc})") from None
    return driver


def available():
    """``(True, "")`` where graphs can be captured, else ``(False, reason)``."""
    try:
        _driver()
    except GraphUnavailable as exc:
        return False, str(exc)
    return True, ""


def _check(result, what):
    """The driver bindings return ``(CUresult, *values)``: raise on an error, return the values."""
    status, *values = result
    if int(status) != 0:
        raise RuntimeError(f"{what} failed: {status}")
    return values[0] if len(values) == 1 else values


def _stream_handle(driver, stream):
    """A driver ``CUstream`` for a Numba stream (its handle as an integer)."""
    if not int(stream):
        raise ValueError("graph capture needs a stream of its own (cuda.stream()), not the default stream")
    return driver.CUstream(int(stream))


class StreamGraph:
    """An instantiated graph captured from a stream; :meth:`launch` replays it."""

    def __init__(self, driver, graph, executable, nodes):
        self._driver = driver
        self._graph = graph
        self._exec = executable
        self.nodes = nodes          # kernel and memory nodes recorded (for reports)

    @classmethod
    def capture(cls, stream, record):
        """Run ``record()`` (which launches onto ``stream``) under stream capture and instantiate
        the result.  If ``record`` raises, capture is ended and the error re-raised."""
        driver = _driver()
        handle = _stream_handle(driver, stream)
        mode = driver.CUstreamCaptureMode.CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
        _check(driver.cuStreamBeginCapture(handle, mode), "cuStreamBeginCapture")
        try:
            record()
        except BaseException:
            driver.cuStreamEndCapture(handle)        # leave the stream usable
            raise
        graph = _check(driver.cuStreamEndCapture(handle), "cuStreamEndCapture")
        try:
            _, count = _check(driver.cuGraphGetNodes(graph, 0), "cuGraphGetNodes")
            executable = _check(driver.cuGraphInstantiate(graph, 0), "cuGraphInstantiate")
        except BaseException:
            driver.cuGraphDestroy(graph)
            raise
        return cls(driver, graph, executable, int(count))

    def launch(self, stream):
        """Replay every recorded launch on ``stream`` (asynchronous, like a kernel launch)."""
        _check(self._driver.cuGraphLaunch(self._exec, _stream_handle(self._driver, stream)),
               "cuGraphLaunch")

    def close(self):
        if self._exec is not None:
            self._driver.cuGraphExecDestroy(self._exec)
            self._driver.cuGraphDestroy(self._graph)
            self._exec = self._graph = None

    def __del__(self):
        try:
            self.close()
        except Exception:       # noqa: BLE001  (interpreter shutdown: the driver may be gone)
            pass
