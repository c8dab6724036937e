"""Gradient checks: central finite differences along a random direction, and comparison of a
peer's gradient against the reference."""

import numpy as np


def _perturb(args, wrt, dirs, eps):
    out = list(args)
    for i, v in zip(wrt, dirs):
        a = args[i]
        if np.ndim(a) == 0:
            out[i] = float(a) + eps * float(v)
        else:
            out[i] = np.asarray(a, dtype=np.float64) + eps * v
    return tuple(out)


def fd_directional(f, args, wrt, rng, h=1e-6):
    """Return (directions, central-FD directional derivative) of scalar f at args."""
    dirs = []
    for i in wrt:
        a = np.asarray(args[i], dtype=np.float64)
        dirs.append(rng.standard_normal(a.shape))
    fp = f(*_perturb(args, wrt, dirs, h))
    fm = f(*_perturb(args, wrt, dirs, -h))
    return dirs, (fp - fm) / (2.0 * h)


def fd_check(f, args, wrt, grads, seed=1, h=(1e-6, 1e-5, 1e-4), rtol=1e-5):
    """Check grads (tuple, wrt order) against central differences of f along a random direction.

    Several step sizes are tried (round-off dominates small steps on large sums, truncation
    large steps on strongly nonlinear programs); the best agreement counts.
    Returns (ok, relative_error, fd_value, ad_value).
    """
    best = None
    for hh in np.atleast_1d(h):
        rng = np.random.default_rng(seed)
        dirs, fd = fd_directional(f, args, wrt, rng, float(hh))
        ad = sum(float(np.sum(np.asarray(g) * v)) for g, v in zip(grads, dirs))
        err = abs(ad - fd) / max(abs(fd), abs(ad), 1e-12)
        if best is None or err < best[1]:
            best = (err <= rtol, err, fd, ad)
        if best[0]:
            break
    return best


def compare_grads(got, ref, rtol):
    """Relative error ||got - ref|| / ||ref|| over all wrt arguments; (ok, err, message)."""
    if got is None:
        return False, float("nan"), "no gradient"
    if len(got) != len(ref):
        return False, float("nan"), f"got {len(got)} gradients, expected {len(ref)}"
    num = 0.0
    den = 0.0
    for g, r in zip(got, ref):
        g = np.asarray(g, dtype=np.float64)
        if g.shape != r.shape:
            if g.size == r.size:
                g = g.reshape(r.shape)
            else:
                return False, float("nan"), f"shape {g.shape} != {r.shape}"
        if not np.all(np.isfinite(g)):
            return False, float("nan"), "non-finite gradient"
        num += float(np.sum((g - r) ** 2))
        den += float(np.sum(r ** 2))
    err = (num ** 0.5) / max(den ** 0.5, 1e-300)
    return err <= rtol, err, f"rel err {err:.2e}"
