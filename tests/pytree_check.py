"""Finite-difference checks for gradients of pytree arguments (tuples, lists, dicts of arrays).

``check_tree_grad(f, args, wrt, target)`` computes srcgrad's gradient and compares every float leaf
of every ``wrt`` argument with central differences of ``f`` in float64 (elementwise for small
leaves, along a random direction for large ones). The gradient must have the argument's structure:
same container types, dict keys in the same order, each float leaf's shape and dtype, and None for
leaves that are not floats.
"""
import inspect
import math

import numpy as np

import srcgrad


def tree_leaves(tree):
    if isinstance(tree, dict):
        return [leaf for value in tree.values() for leaf in tree_leaves(value)]
    if isinstance(tree, (tuple, list)):
        return [leaf for value in tree for leaf in tree_leaves(value)]
    return [tree]


def tree_map_leaves(tree, new_leaves):
    """``tree`` with its leaves replaced, in order, by ``new_leaves`` (an iterator)."""
    if isinstance(tree, dict):
        return {key: tree_map_leaves(value, new_leaves) for key, value in tree.items()}
    if isinstance(tree, list):
        return [tree_map_leaves(value, new_leaves) for value in tree]
    if isinstance(tree, tuple):
        items = [tree_map_leaves(value, new_leaves) for value in tree]
        return type(tree)(*items) if hasattr(type(tree), "_fields") else tuple(items)   # namedtuples
    return next(new_leaves)


def assert_same_structure(grad, arg):
    if isinstance(arg, dict):
        assert isinstance(grad, dict) and list(grad) == list(arg), (type(grad), arg.keys())
        for key in arg:
            assert_same_structure(grad[key], arg[key])
    elif isinstance(arg, (tuple, list)):
        assert type(grad) is type(arg) and len(grad) == len(arg), (type(grad), type(arg))
        for g, a in zip(grad, arg):
            assert_same_structure(g, a)
    elif _is_float(arg):
        if isinstance(arg, np.ndarray):
            assert isinstance(grad, np.ndarray), type(grad)
            assert grad.shape == arg.shape and grad.dtype == arg.dtype, (grad.shape, grad.dtype)
        else:
            assert isinstance(grad, float), type(grad)
    else:
        assert grad is None, f"a non-float leaf got gradient {grad!r}"


def _is_float(value):
    if isinstance(value, np.ndarray):
        return value.dtype.kind == "f"
    return isinstance(value, (float, np.floating))


def _as64(tree):
    leaves = [leaf.astype(np.float64) if isinstance(leaf, np.ndarray) and leaf.dtype.kind == "f"
              else float(leaf) if isinstance(leaf, np.floating) else leaf for leaf in tree_leaves(tree)]
    return tree_map_leaves(tree, iter(leaves))


def _with_leaf(tree, k, value):
    leaves = tree_leaves(tree)
    leaves[k] = value
    return tree_map_leaves(tree, iter(leaves))


def _value(f, args, index, tree):
    call = list(args)
    call[index] = tree
    return float(f(*call))


def fd_leaf(f, args, index, k, rng, full_limit):
    """(elementwise FD or None, (direction, directional FD)) for leaf ``k`` of argument ``index``."""
    args = [_as64(a) for a in args]
    tree = args[index]
    leaf = tree_leaves(tree)[k]
    if not isinstance(leaf, np.ndarray):
        h = 1e-6 * max(1.0, abs(leaf))
        return ((_value(f, args, index, _with_leaf(tree, k, leaf + h)) -
                 _value(f, args, index, _with_leaf(tree, k, leaf - h))) / (2 * h)), None
    full = None
    if leaf.size <= full_limit:
        full = np.zeros(leaf.shape)
        for pos in np.ndindex(leaf.shape):
            h = 1e-6 * max(1.0, abs(leaf[pos]))
            plus, minus = leaf.copy(), leaf.copy()
            plus[pos] += h
            minus[pos] -= h
            full[pos] = (_value(f, args, index, _with_leaf(tree, k, plus)) -
                         _value(f, args, index, _with_leaf(tree, k, minus))) / (2 * h)
    v = rng.standard_normal(leaf.shape)
    h = 1e-6 * max(1.0, float(np.max(np.abs(leaf))) if leaf.size else 1.0)
    directional = (_value(f, args, index, _with_leaf(tree, k, leaf + h * v)) -
                   _value(f, args, index, _with_leaf(tree, k, leaf - h * v))) / (2 * h)
    return full, (v, directional)


def check_tree_grad(f, args, wrt=0, target="python", rtol=1e-5, atol=1e-6, gradfn=None, seed=0,
                    full_limit=64, fd_function=None):
    """Assert srcgrad's gradient of ``f`` w.r.t. the (pytree) arguments ``wrt`` matches FD.

    ``fd_function`` is what finite differences evaluate (default ``f``; a test of a function
    srcgrad builds itself, such as a NumPy function passed directly, passes the same thing).
    Returns srcgrad's gradient(s)."""
    if gradfn is None:
        gradfn = srcgrad.grad(f, wrt=wrt, target=target)
    evaluate = fd_function or f
    grads = gradfn(*args)
    try:
        params = list(inspect.signature(evaluate).parameters)
    except (TypeError, ValueError):
        params = []
    single = not isinstance(wrt, (tuple, list))
    items = [wrt] if single else list(wrt)
    indices = [params.index(w) if isinstance(w, str) else int(w) for w in items]
    glist = [grads] if single else list(grads)
    assert len(glist) == len(indices)
    rng = np.random.default_rng(seed)
    for index, g in zip(indices, glist):
        arg = args[index]
        assert_same_structure(g, arg)
        for k, (leaf, gleaf) in enumerate(zip(tree_leaves(arg), tree_leaves(g))):
            if not _is_float(leaf):
                continue
            full, directional = fd_leaf(evaluate, args, index, k, rng, full_limit)
            if directional is None:
                assert math.isclose(gleaf, full, rel_tol=rtol, abs_tol=atol), \
                    f"arg {index} leaf {k}: srcgrad {gleaf!r} vs FD {full!r}"
                continue
            g64 = np.asarray(gleaf, dtype=np.float64)
            v, expected = directional
            got = float(np.sum(g64 * v))
            scale = float(np.sum(np.abs(g64 * v)))
            assert math.isclose(got, expected, rel_tol=rtol, abs_tol=atol + rtol * scale), \
                f"arg {index} leaf {k}: directional srcgrad {got!r} vs FD {expected!r}"
            if full is not None:
                np.testing.assert_allclose(g64, full, rtol=rtol, atol=atol,
                                           err_msg=f"arg {index} leaf {k} elementwise")
    return grads
