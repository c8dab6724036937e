"""Maximum-likelihood ICA with heavy-tailed (Student-t) sources: the observations are x = A s,
the unmixing matrix W recovers s = W x, and log p(x) = sum log t(W x) + n log|det W|."""
import numpy as np
from scipy.stats import t


def ica_log_likelihood(W, log_scale, X, df=3.0):
    sources = np.dot(X, W.T)
    sign, logdet = np.linalg.slogdet(W)
    log_src = t.logpdf(sources, df, loc=0.0, scale=np.exp(log_scale))
    return np.sum(log_src) + X.shape[0] * logdet


_rs = np.random.RandomState(6)
true_sources = _rs.standard_t(3.0, size=(8, 2))
mixing = np.array([[1.0, 0.5], [-0.3, 1.2]])
observations = np.dot(true_sources, mixing.T)


def objective(params):
    W, log_scale = params
    return -ica_log_likelihood(W, log_scale, observations) / observations.shape[0]
