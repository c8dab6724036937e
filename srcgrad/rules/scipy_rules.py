"""Derivative rules of scipy.special and scipy.stats, registered on first use (importing
scipy.stats takes about a second): lookup() and library_helper() call _register_scipy() when they
meet a function they do not know."""
import numpy as np

from .. import kinds as K
from ..errors import SrcgradError
from ..runtime import (logsumexp_adjoint, stats_mvn_logpdf_adjoint, special_digamma,  # noqa: E402,F401
                      special_polygamma1, stats_t_logpdf_adjoint)
from ..runtime import special_polygamma2  # noqa: E402,F401
from .callees import SCIPY_LOADER
from .table import (REGISTRY, Rule, _SCIPY_REGISTERED, _axis_value, _library, d, elementwise_kind,
                    reduction_kind, register_adjoint, register_tangent)


def _logsumexp_kind(a, axis=None, b=None, keepdims=False, return_sign=False):
    if b is not None or return_sign is not False:
        raise TypeError("scipy.special.logsumexp: the b and return_sign arguments are not supported")
    _axis_value(a, axis, "logsumexp")
    return reduction_kind(a, axis, keepdims)


def _logsumexp(result, a, axis=None, b=None, keepdims=False, return_sign=False):
    d[a] += logsumexp_adjoint(d[result], a, result, axis, keepdims)


# the softmax-weighted sum of the tangent (weights shifted by the max: it cancels in the ratio)
def _logsumexp_tangent(result, a, axis=None, b=None, keepdims=False, return_sign=False):
    w = np.exp(a - np.max(a, axis=axis, keepdims=True))
    d[result] += np.sum(d[a] * w, axis=axis, keepdims=keepdims) / np.sum(w, axis=axis, keepdims=keepdims)


def _expit(result, x):
    d[x] += d[result] * result * (1.0 - result)


def _expit_tangent(result, x):
    d[result] += d[x] * result * (1.0 - result)


def _logit(result, x):
    d[x] += d[result] / (x * (1.0 - x))


def _logit_tangent(result, x):
    d[result] += d[x] / (x * (1.0 - x))


def _erf(result, x):
    d[x] += d[result] * 1.1283791670955126 * np.exp(-x * x)       # 2 / sqrt(pi)


def _erf_tangent(result, x):
    d[result] += d[x] * 1.1283791670955126 * np.exp(-x * x)


def _erfc(result, x):
    d[x] -= d[result] * 1.1283791670955126 * np.exp(-x * x)


def _erfc_tangent(result, x):
    d[result] -= d[x] * 1.1283791670955126 * np.exp(-x * x)


def _gammaln(result, x):
    d[x] += d[result] * special_digamma(x)


def _gammaln_tangent(result, x):
    d[result] += d[x] * special_digamma(x)


def _digamma(result, x):
    d[x] += d[result] * special_polygamma1(x)


def _digamma_tangent(result, x):
    d[result] += d[x] * special_polygamma1(x)


# hvp differentiates the tangents above again: digamma (runtime helper) has the trigamma as
# derivative, the trigamma the tetragamma (polygamma(2, x)); the tetragamma's own derivative is
# not provided (third derivatives through digamma: a clear error, not a wrong answer)
@register_adjoint(special_digamma)
def _special_digamma(result, x):
    d[x] += d[result] * special_polygamma1(x)


@register_adjoint(special_polygamma1)
def _special_polygamma1(result, x):
    d[x] += d[result] * special_polygamma2(x)


class _NoThirdDerivative(Rule):
    def bind(self, result, args, keywords):
        raise SrcgradError("the derivative of the tetragamma function (polygamma(3, x)) is not "
                           "supported: third derivatives through scipy.special.digamma are not "
                           "available")


def _special_polygamma2(result, x):
    d[x] += d[result]         # (never generated: bind refuses)


REGISTRY[special_polygamma2] = _NoThirdDerivative(_special_polygamma2)


def _betaln(result, a, b):
    ab = special_digamma(a + b)
    d[a] += d[result] * (special_digamma(a) - ab)
    d[b] += d[result] * (special_digamma(b) - ab)


def _betaln_tangent(result, a, b):
    ab = special_digamma(a + b)
    d[result] += d[a] * (special_digamma(a) - ab)
    d[result] += d[b] * (special_digamma(b) - ab)


def _stats_kind(*args, **kw):
    for value in list(args) + list(kw.values()):
        if not isinstance(value, (K.Kind, int, float)):
            raise TypeError(f"unsupported argument {value!r}")
    kinds = [v if isinstance(v, K.Kind) else K.FLOAT for v in list(args) + list(kw.values())]
    return K.broadcast(*kinds, dtype="float")


# log N(x; loc, scale^2) with z = (x - loc) / scale: d/dx = -z / scale, d/dscale = (z^2 - 1) / scale
def _norm_logpdf(result, x, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    d[x] -= d[result] * z / scale
    d[loc] += d[result] * z / scale
    d[scale] += d[result] * (z * z - 1.0) / scale


def _norm_logpdf_tangent(result, x, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    d[result] -= d[x] * z / scale
    d[result] += d[loc] * z / scale
    d[result] += d[scale] * (z * z - 1.0) / scale


def _norm_pdf(result, x, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    d[x] -= d[result] * result * z / scale
    d[loc] += d[result] * result * z / scale
    d[scale] += d[result] * result * (z * z - 1.0) / scale


def _norm_pdf_tangent(result, x, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    d[result] -= d[x] * result * z / scale
    d[result] += d[loc] * result * z / scale
    d[result] += d[scale] * result * (z * z - 1.0) / scale


def _norm_cdf(result, x, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    density = np.exp(-0.5 * z * z) * 0.3989422804014327 / scale      # 1 / sqrt(2 pi)
    d[x] += d[result] * density
    d[loc] -= d[result] * density
    d[scale] -= d[result] * density * z


def _norm_cdf_tangent(result, x, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    density = np.exp(-0.5 * z * z) * 0.3989422804014327 / scale
    d[result] += d[x] * density
    d[result] -= d[loc] * density
    d[result] -= d[scale] * density * z


def _t_logpdf(result, x, df, loc=0.0, scale=1.0):
    d[x] += stats_t_logpdf_adjoint(d[result], x, df, loc, scale, 0)
    d[df] += stats_t_logpdf_adjoint(d[result], x, df, loc, scale, 1)
    d[loc] += stats_t_logpdf_adjoint(d[result], x, df, loc, scale, 2)
    d[scale] += stats_t_logpdf_adjoint(d[result], x, df, loc, scale, 3)


# log t(x; v, loc, s) = gammaln((v+1)/2) - gammaln(v/2) - log(v pi)/2 - log s - (v+1)/2 log(1 + z^2/v)
# with z = (x - loc) / s; written with plain NumPy and special_digamma (both differentiable: hvp)
def _t_logpdf_tangent(result, x, df, loc=0.0, scale=1.0):
    z = (x - loc) / scale
    q = (df + 1.0) * z / (scale * (df + z * z))
    d[result] -= d[x] * q
    d[result] += d[loc] * q
    d[result] += d[scale] * (q * z - 1.0 / scale)
    d[result] += d[df] * (0.5 * (special_digamma(0.5 * df + 0.5) - special_digamma(0.5 * df)) - 0.5 / df
                          - 0.5 * np.log1p(z * z / df) + 0.5 * (df + 1.0) * z * z / (df * (df + z * z)))


def _mvn_kind(x, mean, cov, **kw):
    if kw or not (x.is_array and x.ndim in (1, 2) and mean.is_array and mean.ndim == 1
                  and cov.is_array and cov.ndim == 2):
        raise TypeError("multivariate_normal.logpdf is supported as logpdf(x, mean, cov) with x one "
                        "point (1-d) or one point per row (2-d), mean 1-d and cov 2-d")
    return K.array(x.ndim - 1)


def _mvn_logpdf(result, x, mean, cov):
    d[x] += stats_mvn_logpdf_adjoint(d[result], x, mean, cov, 0)
    d[mean] += stats_mvn_logpdf_adjoint(d[result], x, mean, cov, 1)
    d[cov] += stats_mvn_logpdf_adjoint(d[result], x, mean, cov, 2)


# with alpha = cov^-1 (x - mean) per point: d log N = -alpha.dx + alpha.dmean
# + (alpha^T dcov alpha - tr(cov^-1 dcov)) / 2 (the adjoint's symmetric gradient, paired with dcov)
def _mvn_logpdf_tangent(result, x, mean, cov):
    alpha = np.linalg.solve(cov, (x - mean).T).T
    d[result] -= np.sum(d[x] * alpha, axis=-1)
    d[result] += np.sum(d[mean] * alpha, axis=-1)
    d[result] += 0.5 * (np.sum((alpha @ d[cov]) * alpha, axis=-1) - np.sum(np.linalg.inv(cov) * d[cov]))


def _register_scipy():
    """Register the scipy.special and scipy.stats rules (once); True when something was added."""
    if _SCIPY_REGISTERED:
        return False
    _SCIPY_REGISTERED.append(True)
    import scipy.special as special
    import scipy.stats as stats
    unary = elementwise_kind
    _library(special.logsumexp, "special_logsumexp", _logsumexp, _logsumexp_kind)
    register_tangent(special.logsumexp)(_logsumexp_tangent)
    _library(special.expit, "special_expit", _expit, unary, elementwise=True)
    register_tangent(special.expit)(_expit_tangent)
    _library(special.logit, "special_logit", _logit, unary, elementwise=True)
    register_tangent(special.logit)(_logit_tangent)
    _library(special.erf, "special_erf", _erf, unary, elementwise=True)
    register_tangent(special.erf)(_erf_tangent)
    _library(special.erfc, "special_erfc", _erfc, unary, elementwise=True)
    register_tangent(special.erfc)(_erfc_tangent)
    _library(special.gammaln, "special_gammaln", _gammaln, unary, elementwise=True)
    register_tangent(special.gammaln)(_gammaln_tangent)
    _library(special.digamma, "special_digamma", _digamma, unary, elementwise=True)
    register_tangent(special.digamma)(_digamma_tangent)
    _library(special.psi, "special_digamma", _digamma, unary, elementwise=True)
    register_tangent(special.psi)(_digamma_tangent)
    _library(special.betaln, "special_betaln", _betaln, unary, elementwise=True)
    register_tangent(special.betaln)(_betaln_tangent)
    _library(stats.norm.logpdf, "stats_norm_logpdf", _norm_logpdf, _stats_kind, elementwise=True)
    register_tangent(stats.norm.logpdf)(_norm_logpdf_tangent)
    _library(stats.norm.pdf, "stats_norm_pdf", _norm_pdf, _stats_kind, elementwise=True)
    register_tangent(stats.norm.pdf)(_norm_pdf_tangent)
    _library(stats.norm.cdf, "stats_norm_cdf", _norm_cdf, _stats_kind, elementwise=True)
    register_tangent(stats.norm.cdf)(_norm_cdf_tangent)
    _library(stats.t.logpdf, "stats_t_logpdf", _t_logpdf, _stats_kind, elementwise=True)
    register_tangent(stats.t.logpdf)(_t_logpdf_tangent)
    _library(stats.multivariate_normal.logpdf, "stats_mvn_logpdf", _mvn_logpdf, _mvn_kind)
    register_tangent(stats.multivariate_normal.logpdf)(_mvn_logpdf_tangent)
    return True


SCIPY_LOADER.append(_register_scipy)
