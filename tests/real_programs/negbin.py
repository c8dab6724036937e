"""Maximum-likelihood fit of a negative-binomial distribution to counts (autograd's
negative_binomial_maxlike example style), with scipy.special.gammaln; r and p are
parameterised unconstrained (softplus / logistic)."""
import numpy as np
from scipy.special import expit, gammaln


def newton_free_params(params):
    r = np.log(1.0 + np.exp(params[0]))   # softplus keeps r > 0
    p = expit(params[1])                  # logistic keeps 0 < p < 1
    return r, p


def negbin_loglike(r, p, x):
    # log Gamma(r + x) - log Gamma(r) - log x! + x log p + r log(1 - p)
    return gammaln(r + x) - gammaln(r) - gammaln(x + 1) + x * np.log(p) + r * np.log(1 - p)


def negbin_sample(r, p, size, rs=np.random.RandomState(0)):
    # numpy's parameterisation: number of failures before r successes with success prob 1 - p
    return rs.negative_binomial(r, 1 - p, size=size)


data = negbin_sample(r=5, p=0.5, size=12)   # an int64 array of counts


def nll(params):
    r, p = newton_free_params(params)
    return -np.sum(negbin_loglike(r, p, data)) / data.shape[0]
