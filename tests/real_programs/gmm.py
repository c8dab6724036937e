"""Negative log-likelihood of a diagonal-covariance Gaussian mixture (autograd's gmm example
style), normalised with scipy.special.logsumexp; parameters in a dict, data a module global."""
import numpy as np
from scipy.special import logsumexp


def init_gmm_params(num_components, D, scale, rs=np.random.RandomState(0)):
    return {"log proportions": rs.randn(num_components) * scale,
            "means": rs.randn(num_components, D) * scale,
            "log stds": rs.randn(num_components, D) * scale}


def log_normalize(x):
    return x - logsumexp(x)


def gmm_log_likelihood(params, data):
    log_weights = log_normalize(params["log proportions"])
    D = data.shape[1]
    cluster_lls = []
    for log_weight, mean, log_std in zip(log_weights, params["means"], params["log stds"]):
        z = (data - mean) / np.exp(log_std)
        ll = -0.5 * np.sum(z ** 2, axis=1) - np.sum(log_std) - 0.5 * D * np.log(2 * np.pi)
        cluster_lls.append(log_weight + ll)
    return np.sum(logsumexp(np.vstack(cluster_lls), axis=0))


_rs = np.random.RandomState(4)
data = np.concatenate([_rs.randn(4, 2) * 0.5 + 1.0, _rs.randn(3, 2) * 0.3 - 1.0])


def objective(params):
    return -gmm_log_likelihood(params, data)
