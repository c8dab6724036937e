"""Gaussian-process regression: log marginal likelihood of an RBF-kernel GP (autograd's
gaussian_process example style), with np.linalg.cholesky, solve and slogdet; the training data
are module globals and the hyperparameters one flat array (mean, log noise, log output scale,
log lengthscales)."""
import numpy as np


def rbf_covariance(kernel_params, x, xp):
    output_scale = np.exp(kernel_params[0])
    lengthscales = np.exp(kernel_params[1:])
    diffs = np.expand_dims(x / lengthscales, 1) - np.expand_dims(xp / lengthscales, 0)
    return output_scale * np.exp(-0.5 * np.sum(diffs ** 2, axis=2))


def unpack_kernel_params(params):
    mean = params[0]
    cov_params = params[2:]
    noise_scale = np.exp(params[1]) + 0.0001
    return mean, cov_params, noise_scale


def log_marginal_likelihood(params, X, y):
    mean, cov_params, noise_scale = unpack_kernel_params(params)
    cov_y_y = rbf_covariance(cov_params, X, X) + noise_scale * np.eye(len(y))
    L = np.linalg.cholesky(cov_y_y)
    alpha = np.linalg.solve(L.T, np.linalg.solve(L, y - mean))
    sign, logdet = np.linalg.slogdet(cov_y_y)
    return -0.5 * np.dot(y - mean, alpha) - 0.5 * logdet - 0.5 * len(y) * np.log(2 * np.pi)


def predict(params, x, y, xstar):
    """Posterior mean and covariance at xstar (not differentiated; used by the example)."""
    mean, cov_params, noise_scale = unpack_kernel_params(params)
    cov_f_f = rbf_covariance(cov_params, xstar, xstar)
    cov_y_f = rbf_covariance(cov_params, x, xstar)
    cov_y_y = rbf_covariance(cov_params, x, x) + noise_scale * np.eye(len(y))
    pred_mean = mean + np.dot(np.linalg.solve(cov_y_y, cov_y_f).T, y - mean)
    pred_cov = cov_f_f - np.dot(np.linalg.solve(cov_y_y, cov_y_f).T, cov_y_f)
    return pred_mean, pred_cov


def build_toy_dataset(D=1, n_data=6, noise_std=0.1, rs=np.random.RandomState(0)):
    inputs = np.concatenate([np.linspace(0, 3, num=n_data // 2),
                             np.linspace(6, 8, num=n_data - n_data // 2)])
    targets = (np.cos(inputs) + rs.randn(n_data) * noise_std) / 2.0
    inputs = (inputs - 4.0) / 2.0
    return inputs.reshape((len(inputs), D)), targets


X, y = build_toy_dataset()


def objective(params):
    return -log_marginal_likelihood(params, X, y)
