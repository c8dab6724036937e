"""A variational autoencoder objective (autograd's vae example style): Gaussian encoder, Bernoulli
decoder, the reparameterised latent samples passed in as data, scipy.stats.norm.logpdf for the
prior and the posterior density."""
import numpy as np
from scipy.stats import norm


def init_net_params(scale, layer_sizes, rs=np.random.RandomState(0)):
    return [(scale * rs.randn(m, n), scale * rs.randn(n))
            for m, n in zip(layer_sizes[:-1], layer_sizes[1:])]


def neural_net_predict(params, inputs):
    for W, b in params[:-1]:
        inputs = np.tanh(np.dot(inputs, W) + b)
    W, b = params[-1]
    return np.dot(inputs, W) + b


def nn_predict_gaussian(params, inputs):
    output = neural_net_predict(params, inputs)
    D = output.shape[-1] // 2
    return output[:, :D], output[:, D:]


def bernoulli_log_density(targets, unnormalized_logprobs):
    # log p(targets | logits), targets in {0, 1}
    return np.sum(targets * unnormalized_logprobs - np.logaddexp(0.0, unnormalized_logprobs),
                  axis=1)


def vae_lower_bound(gen_params, rec_params, data, eps):
    q_means, q_log_stds = nn_predict_gaussian(rec_params, data)
    latents = q_means + np.exp(q_log_stds) * eps
    log_q = np.sum(norm.logpdf(latents, q_means, np.exp(q_log_stds)), axis=1)
    log_prior = np.sum(norm.logpdf(latents, 0.0, 1.0), axis=1)
    logits = neural_net_predict(gen_params, latents)
    log_lik = bernoulli_log_density(data, logits)
    return np.mean(log_lik + log_prior - log_q)


latent_dim = 2
data_dim = 4
_rs = np.random.RandomState(5)
train_data = (_rs.rand(3, data_dim) > 0.5).astype(np.float64)
# eps ~ N(0, 1): drawn outside the differentiated function and passed in
eps = _rs.randn(3, latent_dim)


def objective(gen_params, rec_params):
    return -vae_lower_bound(gen_params, rec_params, train_data, eps)
