"""A vanilla recurrent network (autograd's rnn example style): dict of parameters, the hidden
state rebound at every step, per-step outputs appended to a list and stacked."""
import numpy as np
from scipy.special import logsumexp


def create_rnn_params(input_size, state_size, output_size, param_scale=0.1,
                      rs=np.random.RandomState(0)):
    return {"init hiddens": rs.randn(1, state_size) * param_scale,
            "change": rs.randn(input_size + state_size + 1, state_size) * param_scale,
            "predict": rs.randn(state_size + 1, output_size) * param_scale}


def sigmoid(x):
    return 0.5 * (np.tanh(x) + 1.0)


def concat_and_multiply(weights, *args):
    cat_state = np.hstack(args + (np.ones((args[0].shape[0], 1)),))
    return np.dot(cat_state, weights)


def rnn_predict(params, inputs):
    num_sequences = inputs.shape[1]
    hiddens = np.repeat(params["init hiddens"], num_sequences, axis=0)
    outputs = []
    for t in range(inputs.shape[0]):
        hiddens = np.tanh(concat_and_multiply(params["change"], inputs[t], hiddens))
        output = concat_and_multiply(params["predict"], hiddens)
        outputs.append(output - logsumexp(output, axis=1, keepdims=True))
    return np.stack(outputs)


def rnn_log_likelihood(params, inputs, targets):
    logprobs = rnn_predict(params, inputs)
    return np.sum(logprobs * targets) / (inputs.shape[0] * inputs.shape[1])


# sequences: (time, batch, one-hot characters)
_rs = np.random.RandomState(2)
train_inputs = np.eye(3)[_rs.randint(0, 3, size=(4, 2))]
train_targets = np.eye(3)[_rs.randint(0, 3, size=(4, 2))]


def training_loss(params):
    return -rnn_log_likelihood(params, train_inputs, train_targets)
