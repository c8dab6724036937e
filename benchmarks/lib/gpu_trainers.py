"""One SGD epoch of the MNIST MLP (784-128-10, ReLU, softmax cross-entropy, float32) on the GPU,
written by each tool as its users would write it, for ``benchmarks/gpu_check.py``.

Every trainer keeps the float32 images, the labels and its parameters on the device; an epoch
takes a host permutation ``order`` and runs ``len(order) // B`` steps of plain SGD (lr 0.1) over
the minibatches ``order[s*B:(s+1)*B]``, gathering each batch on the device.  All start from the
same parameters (``srcgrad.training.mlp.init_params``)::

    t = GPU_TRAINERS[name](X, y, B)     # host float32 images, int64 labels
    t.compile_s = t.setup(params)        # device copies, build/compile; returns seconds
    t.epoch(order)                       # returns when the device has finished
    t.params()                           # host float32 copies

* ``srcgrad``: ``srcgrad.training.cuda_mlp.train_epoch(..., program=generated_program(mlp_loss))``:
  the kernels srcgrad generates from the adjoint of the plain NumPy loss (array mode), launched
  one by one from Python.
* ``srcgrad-graph``: the same launches recorded once as a CUDA graph (``cuda_mlp.EpochGraph``) and
  replayed with one call per epoch.
* ``hand`` / ``hand-graph``: the hand-written kernel sequence of ``cuda_mlp`` (11 launches a step),
  eager and as a graph.
* ``torch``: eager ``nn.Sequential`` + ``optim.SGD``, ``index_select`` of the rows on the device.
* ``jax-step``: ``jit`` of one step (gather inside, parameters donated), one dispatch per step;
* ``jax-scan``: the whole epoch in one ``jit(lax.scan)``, the batch indices passed in: both are
  ``benchmarks/lib/mnist_trainers.py``'s JAX trainers (on a GPU machine JAX places the data on
  the GPU; float32 images are used as they are).
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.lib.mnist_trainers import JaxScanTrainer, JaxStepTrainer, torch_mlp

LR = 0.1
N_OUT = 10


class GPUTrainer:
    def __init__(self, X, y, B):
        self.X, self.y, self.B = X, y, int(B)

    def nsteps(self, order):
        return len(order) // self.B


class SrcgradTrainer(GPUTrainer):
    graph = False
    generated = True

    def setup(self, params):
        from srcgrad.training import cuda_mlp
        from srcgrad.training.mlp import mlp_loss
        from numba import cuda
        self.cm = cuda_mlp
        t0 = time.perf_counter()
        self.program = cuda_mlp.generated_program(mlp_loss) if self.generated else None
        self.state = cuda_mlp.init_state(params=dict(zip(cuda_mlp._PARAM_NAMES, params)))
        self.Xd, self.yd = cuda_mlp.to_device(self.X, self.y)
        if self.graph:
            n = (len(self.X) // self.B) * self.B
            self.runner = cuda_mlp.EpochGraph(self.state, self.Xd, self.yd, n, self.B, LR,
                                              momentum=0.0, drop_last=True, program=self.program)
            self.nodes = getattr(self.runner.graph, "nodes", None)
        else:       # one step compiles every kernel (then the parameters are restored)
            saved = self.state.p.copy_to_host()
            self.cm.train_epoch(self.state, self.Xd, self.yd, np.arange(self.B), self.B, LR,
                                momentum=0.0, drop_last=True, program=self.program)
            self.state.p.copy_to_device(saved)
            self.state.v.copy_to_device(np.zeros_like(saved))
        cuda.synchronize()
        return time.perf_counter() - t0

    def epoch(self, order):
        n = self.nsteps(order) * self.B
        if self.graph:
            self.runner.run(order[:n])
        else:
            self.cm.train_epoch(self.state, self.Xd, self.yd, np.ascontiguousarray(order[:n]),
                                self.B, LR, momentum=0.0, drop_last=True, program=self.program)

    def params(self):
        p = self.cm.get_params(self.state)
        return [p[k] for k in self.cm._PARAM_NAMES]

    def launches_per_step(self):
        if not self.generated:
            return 11
        plan = self.state.buffers(self.B)["plans"][self.B]
        return len(plan.launches) + 1 + 4 + 1        # gather, the plan, 4 SGD, loss sum


class SrcgradGraphTrainer(SrcgradTrainer):
    graph = True


class HandTrainer(SrcgradTrainer):
    generated = False


class HandGraphTrainer(SrcgradTrainer):
    generated = False
    graph = True


class TorchTrainer(GPUTrainer):
    def setup(self, params):
        import torch
        dev = torch.device("cuda")
        t0 = time.perf_counter()
        self.model = torch_mlp(params, dev)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.lossf = torch.nn.CrossEntropyLoss()
        self.Xt = torch.from_numpy(self.X).to(dev)
        self.yt = torch.from_numpy(self.y).to(dev)
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    def epoch(self, order):
        import torch
        B, model, opt, lossf = self.B, self.model, self.opt, self.lossf
        o = torch.from_numpy(np.ascontiguousarray(order)).to("cuda", non_blocking=False)
        for s in range(self.nsteps(order)):
            idx = o[s * B:(s + 1) * B]
            opt.zero_grad(set_to_none=True)
            lossf(model(self.Xt.index_select(0, idx)), self.yt.index_select(0, idx)).backward()
            opt.step()
        torch.cuda.synchronize()

    def params(self):
        m = self.model
        return [m[0].weight.detach().cpu().numpy().T.copy(), m[0].bias.detach().cpu().numpy().copy(),
                m[2].weight.detach().cpu().numpy().T.copy(), m[2].bias.detach().cpu().numpy().copy()]


GPU_TRAINERS = {
    "srcgrad": SrcgradTrainer,
    "srcgrad-graph": SrcgradGraphTrainer,
    "hand": HandTrainer,
    "hand-graph": HandGraphTrainer,
    "torch": TorchTrainer,
    "jax-step": JaxStepTrainer,
    "jax-scan": JaxScanTrainer,
}

GPU_LABELS = {
    "srcgrad": "srcgrad generated kernels, eager launches",
    "srcgrad-graph": "srcgrad generated kernels, one CUDA graph per epoch",
    "hand": "hand-written kernels (cuda_mlp), eager launches",
    "hand-graph": "hand-written kernels, one CUDA graph per epoch",
    "torch": "PyTorch eager (nn.Sequential + optim.SGD)",
    "jax-step": "JAX jit step (donated)",
    "jax-scan": "JAX jit(lax.scan) epoch",
}
