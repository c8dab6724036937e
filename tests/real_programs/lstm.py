"""An LSTM sequence model (autograd's lstm example style): hidden and cell states rebound at each
step, iterating over the time axis of the input array, outputs appended and stacked."""
import numpy as np
from scipy.special import logsumexp


def init_lstm_params(input_size, state_size, output_size, param_scale=0.1,
                     rs=np.random.RandomState(0)):
    def rp(*shape):
        return rs.randn(*shape) * param_scale
    return {"init cells": rp(1, state_size),
            "init hiddens": rp(1, state_size),
            "change": rp(input_size + state_size + 1, state_size),
            "forget": rp(input_size + state_size + 1, state_size),
            "ingate": rp(input_size + state_size + 1, state_size),
            "outgate": rp(input_size + state_size + 1, state_size),
            "predict": rp(state_size + 1, output_size)}


def sigmoid(x):
    return 0.5 * (np.tanh(x) + 1.0)


def concat_and_multiply(weights, *args):
    cat_state = np.hstack(args + (np.ones((args[0].shape[0], 1)),))
    return np.dot(cat_state, weights)


def lstm_predict(params, inputs):
    def update_lstm(input, hiddens, cells):
        change = np.tanh(concat_and_multiply(params["change"], input, hiddens))
        forget = sigmoid(concat_and_multiply(params["forget"], input, hiddens))
        ingate = sigmoid(concat_and_multiply(params["ingate"], input, hiddens))
        outgate = sigmoid(concat_and_multiply(params["outgate"], input, hiddens))
        cells = cells * forget + ingate * change
        hiddens = outgate * np.tanh(cells)
        return hiddens, cells

    def hiddens_to_output_probs(hiddens):
        output = concat_and_multiply(params["predict"], hiddens)
        return output - logsumexp(output, axis=1, keepdims=True)

    num_sequences = inputs.shape[1]
    hiddens = np.repeat(params["init hiddens"], num_sequences, axis=0)
    cells = np.repeat(params["init cells"], num_sequences, axis=0)

    output = [hiddens_to_output_probs(hiddens)]
    for input in inputs:  # Iterate over time steps.
        hiddens, cells = update_lstm(input, hiddens, cells)
        output.append(hiddens_to_output_probs(hiddens))
    return np.stack(output)


def lstm_log_likelihood(params, inputs, targets):
    logprobs = lstm_predict(params, inputs)
    return np.sum(logprobs[:-1] * targets) / (inputs.shape[0] * inputs.shape[1])


_rs = np.random.RandomState(3)
train_inputs = np.eye(3)[_rs.randint(0, 3, size=(3, 2))]
train_targets = np.eye(3)[_rs.randint(0, 3, size=(3, 2))]


def training_loss(params):
    return -lstm_log_likelihood(params, train_inputs, train_targets)
