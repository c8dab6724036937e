"""Stage 5 — derivative rules: one small template per function, written like the math.

A template is an ordinary Python function whose parameters are the call's result and arguments.
Its body says how the result's adjoint flows back into each argument::

    @register_adjoint(math.sin, np.sin)
    def sin(result, x):
        d[x] += d[result] * np.cos(x)

``d[x]`` means "the adjoint of x". When srcgrad meets ``y = np.sin(a)`` in active code it copies
the template's statements into the reverse sweep with ``result`` → ``y`` and ``x`` → ``a``, and drops
statements whose argument does not need a derivative. Elementwise templates may produce a
contribution with the result's (broadcast) shape: srcgrad sums it back to the argument's shape.
Plain ``name = expr`` lines in a template are local temporaries shared by the lines below.

Users register rules for their own functions the same way (``srcgrad.register_adjoint``).
Templates live in one table (:data:`REGISTRY`, :mod:`srcgrad.rules.table`), filled by one module per
family: :mod:`~srcgrad.rules.elementwise` (operators, math.* and ufuncs), :mod:`~srcgrad.rules.arrays`
(products, reductions, shape work), :mod:`~srcgrad.rules.numpy_calls` (NumPy library calls),
:mod:`~srcgrad.rules.linalg` (einsum & co., np.linalg) and :mod:`~srcgrad.rules.scipy_rules`
(scipy.special/stats, registered on first use). Facts about callees that are not templates
(array creation, no derivative, ...) are in :mod:`~srcgrad.rules.callees`.
"""
from .callees import (CALLEES, CPU_REFUSED, CREATION, LIBRARY_CALLS, NON_DIFFERENTIABLE, REDUCTIONS,  # noqa: F401
                      TUPLE_ARGUMENT_RULES, Callee, _is_scipy, _key, cpu_refusal, declare, facts,
                      library_helper, random_sampling_message, sequence_call_names)
from .table import (EXTERNALS, REGISTRY, Rule, TangentRule, ZeroDerivative, _REGISTRY_VERSION,  # noqa: F401
                    _label, _parse_template, _source_or_name, d, elementwise_kind, external,
                    external_name, lookup, reduction_kind, register_adjoint, register_tangent,
                    register_zero_derivative, registry_fingerprint, same_kind)
# the rule families register their templates in the table when imported (in this order: a
# tangent template needs its function's adjoint template registered first)
from . import elementwise, arrays, numpy_calls, linalg, scipy_rules  # noqa: E402,F401
# (scipy_rules registers the rules of its runtime helpers now and SciPy's own on first use)
