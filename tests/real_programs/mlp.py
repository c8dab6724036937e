"""A multi-layer perceptron classifier in the style of autograd's neural_net example: parameters
are a list of (weights, biases) tuples, the data live in module globals, tanh hidden layers,
log-softmax output normalised with logsumexp, L2 prior."""
import numpy as np
from scipy.special import logsumexp


def init_random_params(scale, layer_sizes, rs=np.random.RandomState(0)):
    """A list of (weights, biases) tuples, one for each layer in the net."""
    return [(scale * rs.randn(m, n), scale * rs.randn(n))
            for m, n in zip(layer_sizes[:-1], layer_sizes[1:])]


def neural_net_predict(params, inputs):
    """Returns normalized class log-probabilities."""
    for W, b in params:
        outputs = np.dot(inputs, W) + b
        inputs = np.tanh(outputs)
    return outputs - logsumexp(outputs, axis=1, keepdims=True)


def l2_norm(params):
    return sum(np.sum(W ** 2) + np.sum(b ** 2) for W, b in params)


def log_posterior(params, inputs, targets, L2_reg):
    log_prior = -L2_reg * l2_norm(params)
    log_lik = np.sum(neural_net_predict(params, inputs) * targets)
    return log_prior + log_lik


# Module-level data, as in the example script.
layer_sizes = [3, 4, 3]
L2_reg = 0.1
_rs = np.random.RandomState(1)
train_images = _rs.randn(5, layer_sizes[0])
train_labels = np.eye(layer_sizes[-1])[_rs.randint(0, layer_sizes[-1], size=5)]


def objective(params):
    return -log_posterior(params, train_images, train_labels, L2_reg)
