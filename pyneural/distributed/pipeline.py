"""Pipeline model parallelism: a Sequential split into stages, one stage per rank, micro-batches
flowing through them on a 1F1B schedule; optionally replicated for data parallelism (a 2-D grid).

Grid. ``world.size = stages * replicas``; rank ``r`` holds stage ``r % stages`` of replica
``r // stages``. Two communicators are split from the world: the *pipeline group* (the stages of
one replica, which pass activations and gradients point to point) and the *data-parallel group*
(the ranks holding the same stage in every replica, which average that stage's gradients).

Step. Every rank of a replica calls ``train_step(inputs, targets)`` with the same batch (the
loader's sampler splits the data by replica: ``pipe.replica`` / ``pipe.replicas``); stage 0 reads
the inputs, the last stage the targets. The batch is cut into ``micro_batches`` chunks. Stage
``s`` of ``S`` runs ``S - s - 1`` forwards (warm-up), then alternates one forward and one backward
(the steady state), then the remaining backwards (cool-down): one-forward-one-backward (1F1B,
PipeDream-Flush), so a stage holds the activations of at most ``S - s`` micro-batches, never all
of them as a fill-then-drain (GPipe) schedule does. Backwards run in micro-batch order, so each
stage's gradients accumulate exactly as one process accumulating the micro-batches in order
would: the pipeline is bitwise equal to that, and to 1e-5 of one full-batch step. The loss of
micro-batch ``i`` (``n_i`` samples of ``n``) is weighted by ``n_i / n``, so the accumulated
gradient is the full batch's mean-loss gradient. After the schedule the data-parallel group
averages each stage's gradients (one flat allreduce; ``deterministic=True``: an allgather and a
rank-order sum, bitwise reproducible); then the caller steps its optimizer, built over
``pipe.parameters()`` (this stage's only).

Transfers. Activations forward and gradients backward travel as contiguous arrays with
``Isend``/``Irecv`` (no pickling): in the first step each stage sends the next its output's
trailing shape and dtype once; afterwards every receiver knows a message's shape from the
micro-batch size alone. Sends are non-blocking and retired at the end of the step. Every receive
is waited for under the watchdog's deadline: a stage that died or stalls makes its neighbour abort
the job, naming the transfer, the micro-batch and the peer rank, instead of hanging. An exception
on any stage aborts the job as usual (``init()``'s excepthook). Device tensors are staged through
host memory.

The idle time of each stage (waiting for a peer) is measured per step (``stats()``: the bubble
fraction; 1F1B's ideal is ``(S - 1) / (M + S - 1)``) and, with a Timeline, recorded as spans.
"""
import time

import numpy as np

from .. import backend
from ..tensor import Tensor, no_grad
from .collectives import allgather, allreduce_, bcast_
from .comm import World, get_world, init, is_initialized
from .timeline import COMMUNICATION, Timeline
from .watchdog import Watchdog

_DTYPES = [np.dtype(t) for t in (np.float32, np.float64, np.float16, np.int64, np.int32)]
_SIGNATURE_LEN = 12  # ndim, dtype index, up to 10 trailing dimensions
ACTIVATION, GRADIENT = 0, 1


def split_balanced(costs, stages):
    """Cut ``costs`` (one per layer) into ``stages`` contiguous non-empty runs whose largest sum is
    as small as possible; returns the run lengths. Exact (dynamic programming over cut points)."""
    n = len(costs)
    if stages > n:
        raise ValueError(f"Pipeline: {stages} stages need at least {stages} layers, the model has {n}")
    prefix = np.concatenate([[0.0], np.cumsum(costs, dtype=np.float64)])
    best = np.full((stages + 1, n + 1), np.inf)
    cut = np.zeros((stages + 1, n + 1), dtype=np.int64)
    best[0, 0] = 0.0
    for s in range(1, stages + 1):
        for j in range(s, n - (stages - s) + 1):
            for i in range(s - 1, j):
                value = max(best[s - 1, i], prefix[j] - prefix[i])
                if value < best[s, j]:
                    best[s, j], cut[s, j] = value, i
    lengths, j = [], n
    for s in range(stages, 0, -1):
        i = int(cut[s, j])
        lengths.append(j - i)
        j = i
    return lengths[::-1]


def _sub_world(world, comm):
    """A World over the sub-communicator ``comm`` (its own watchdog, the same deadline)."""
    sub = World(comm, world.node_comm, Watchdog(comm, world.watchdog.timeout))
    sub.threads = world.threads
    return sub


class _StageModule:
    """The layers of one stage, called in order (a Sequential of borrowed modules)."""

    def __init__(self, layers):
        self.layers = layers

    def __call__(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class Pipeline:
    """``Pipeline(model, stages, micro_batches)``: this rank's stage of ``model`` (an
    ``nn.Sequential`` or a list of modules). ``balance``: layers per stage (default: split so the
    largest stage has as few parameters as possible). ``loss_fn(output, target)`` is a mean over
    the batch. ``deterministic``: reproducible data-parallel averaging. See the module doc."""

    def __init__(self, model, stages, micro_batches, loss_fn=None, balance=None, world=None,
                 deterministic=False, timeline=None):
        if not isinstance(stages, int) or stages < 1:
            raise ValueError(f"Pipeline: stages must be an int >= 1, got {stages!r}")
        if not isinstance(micro_batches, int) or micro_batches < 1:
            raise ValueError(f"Pipeline: micro_batches must be an int >= 1, got {micro_batches!r}")
        layers = list(model.children()) if hasattr(model, "children") else list(model)
        if not layers:
            raise ValueError("Pipeline: the model has no layers to split")
        self.world = world if world is not None else (get_world() if is_initialized() else init())
        if self.world.size % stages:
            raise ValueError(f"Pipeline: {self.world.size} ranks cannot form pipelines of {stages} stages "
                             f"(the world size must be a multiple of the stage count)")
        if balance is None:
            costs = [sum(p.data.size for p in layer.parameters()) + 1 for layer in layers]
            balance = split_balanced(costs, stages)
        balance = [int(b) for b in balance]
        if len(balance) != stages or min(balance) < 1 or sum(balance) != len(layers):
            raise ValueError(f"Pipeline: balance {balance} must give {stages} positive layer counts summing to the "
                             f"model's {len(layers)} layers")
        if loss_fn is None:
            from .. import functional as F
            loss_fn = F.cross_entropy
        self.stages, self.micro_batches, self.loss_fn = stages, micro_batches, loss_fn
        self.balance, self.deterministic = balance, bool(deterministic)
        self.stage = self.world.rank % stages
        self.replica = self.world.rank // stages
        self.replicas = self.world.size // stages
        comm = self.world.comm
        self.pipe = _sub_world(self.world, comm.Split(color=self.replica, key=self.stage))
        self.dp = _sub_world(self.world, comm.Split(color=self.stage, key=self.replica))
        first = sum(balance[:self.stage])
        self.layer_offset = first
        self.layers = layers[first:first + balance[self.stage]]
        self.module = _StageModule(self.layers)
        self.is_first, self.is_last = self.stage == 0, self.stage == stages - 1
        self.timeline = timeline if timeline is not None else Timeline(self.world, enabled=False)
        self._signature_in = None    # (trailing shape, dtype) of the activations received
        self._signature_out = None   # ... and of those sent
        self._sends = []
        self._stats = np.zeros(3)    # steps, busy seconds, idle (waiting) seconds

    # -- the parts of the model on this rank -----------------------------------------------
    def parameters(self):
        for layer in self.layers:
            yield from layer.parameters()

    def named_parameters(self):
        """This stage's parameters under their names in the whole model ("3.weight")."""
        for i, layer in enumerate(self.layers):
            for name, p in layer.named_parameters():
                yield f"{self.layer_offset + i}.{name}", p

    @property
    def training(self):
        return self.layers[0].training

    def train(self, mode=True):
        for layer in self.layers:
            layer.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def state_dict(self):
        """This stage's entries of the whole model's state_dict (names as in the whole model)."""
        out = {}
        for i, layer in enumerate(self.layers):
            for name, value in layer.state_dict().items():
                out[f"{self.layer_offset + i}.{name}"] = value
        return out

    def load_state_dict(self, state):
        """Load this stage's entries from a whole-model state_dict."""
        for i, layer in enumerate(self.layers):
            prefix = f"{self.layer_offset + i}."
            layer.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})

    # -- point-to-point transfers ----------------------------------------------------------
    def _peer(self, stage):
        return self.replica * self.stages + stage  # the world rank (for messages); pipe rank == stage

    def _wait(self, request, what):
        self.pipe.watchdog.wait([(request, None, what)])

    def _send(self, array, stage, kind, mb):
        host = np.ascontiguousarray(backend.to_device(array, "cpu"))
        self._sends.append((self.pipe.comm.Isend(host, dest=stage, tag=2 * mb + kind), host))

    def _recv(self, shape, dtype, stage, kind, mb):
        buf = np.empty(shape, dtype=dtype)
        request = self.pipe.comm.Irecv(buf, source=stage, tag=2 * mb + kind)
        what = (f"receive of the {'activations' if kind == ACTIVATION else 'gradient'} of micro-batch {mb} "
                f"from pipeline stage {stage} (rank {self._peer(stage)})")
        start = time.perf_counter()
        self._wait(request, what)
        end = time.perf_counter()
        self._idle += end - start
        self.timeline.record(f"wait {'activations' if kind == ACTIVATION else 'gradient'} mb {mb}", start, end,
                             COMMUNICATION)
        return buf

    def _agree_signature(self, y):
        """First step: tell the next stage the trailing shape and dtype of what we send."""
        if self._signature_out is None:
            if y.dtype not in _DTYPES or y.ndim - 1 > _SIGNATURE_LEN - 2:
                raise TypeError(f"Pipeline: stage {self.stage} output of shape {y.shape} and dtype {y.dtype} "
                                f"cannot be sent (dtypes {[d.name for d in _DTYPES]}, at most "
                                f"{_SIGNATURE_LEN - 1} dimensions)")
            sig = np.zeros(_SIGNATURE_LEN, dtype=np.int64)
            sig[0], sig[1] = y.ndim - 1, _DTYPES.index(y.dtype)
            sig[2:2 + y.ndim - 1] = y.shape[1:]
            request = self.pipe.comm.Isend(sig, dest=self.stage + 1, tag=2 ** 14)
            self._wait(request, f"send of the activation signature to pipeline stage {self.stage + 1}")
            self._signature_out = (tuple(y.shape[1:]), y.dtype)
        elif (tuple(y.shape[1:]), y.dtype) != self._signature_out:
            raise ValueError(f"Pipeline: stage {self.stage} output changed from (batch,) + {self._signature_out[0]} "
                             f"{self._signature_out[1]} to {y.shape} {y.dtype}; stage outputs must keep their "
                             f"trailing shape and dtype")

    def _input_signature(self):
        if self._signature_in is None:
            sig = np.empty(_SIGNATURE_LEN, dtype=np.int64)
            request = self.pipe.comm.Irecv(sig, source=self.stage - 1, tag=2 ** 14)
            self._wait(request, f"receive of the activation signature from pipeline stage {self.stage - 1} "
                                f"(rank {self._peer(self.stage - 1)})")
            ndim = int(sig[0])
            self._signature_in = (tuple(int(d) for d in sig[2:2 + ndim]), _DTYPES[int(sig[1])])
        return self._signature_in

    # -- one training step -----------------------------------------------------------------
    def _sizes(self, n):
        m = min(self.micro_batches, n)
        return [n // m + (1 if i < n % m else 0) for i in range(m)]

    def train_step(self, inputs, targets):
        """Forward and backward of one batch on the 1F1B schedule; gradients accumulate into this
        stage's ``.grad`` (zero them before, step the optimizer after). Returns the batch's mean
        loss (this replica's), on every rank."""
        if targets is None:
            raise ValueError("Pipeline.train_step: every stage needs the batch's targets (for the micro-batch "
                             "sizes; the last stage also computes the loss)")
        n = len(targets)
        if self.is_first and (inputs is None or len(inputs) != n):
            raise ValueError(f"Pipeline.train_step: stage 0 needs inputs with one row per target ({n}), got "
                             f"{None if inputs is None else len(inputs)}")
        if self.is_first and not isinstance(inputs, Tensor):
            inputs = Tensor(inputs)
        if not isinstance(targets, Tensor):
            targets = Tensor(targets)
        sizes = self._sizes(n)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        M, S, s = len(sizes), self.stages, self.stage
        self._idle, started = 0.0, time.perf_counter()
        held = {}  # micro-batch -> (input leaf or None, output or weighted loss)
        losses = np.zeros(M)

        def forward(i):
            lo, hi = offsets[i], offsets[i + 1]
            with self.timeline.span(f"forward mb {i}"):
                if self.is_first:
                    x = inputs[lo:hi]
                else:
                    trailing, dtype = self._input_signature()
                    data = self._recv((hi - lo,) + trailing, dtype, s - 1, ACTIVATION, i)
                    x = Tensor(backend.to_device(data, self._device()), requires_grad=True)
                y = self.module(x)
                if self.is_last:
                    loss = self.loss_fn(y, targets[lo:hi])
                    losses[i] = loss.item()
                    held[i] = (x, loss * ((hi - lo) / n))
                else:
                    self._agree_signature(y.data)
                    self._send(y.data, s + 1, ACTIVATION, i)
                    held[i] = (x, y)

        def backward(i):
            with self.timeline.span(f"backward mb {i}"):
                x, out = held.pop(i)
                if self.is_last:
                    out.backward()
                else:
                    g = self._recv(out.data.shape, out.data.dtype, s + 1, GRADIENT, i)
                    out.backward(Tensor(backend.to_device(g, backend.device_of(out.data))))
                if not self.is_first:
                    self._send(x.grad.data, s - 1, GRADIENT, i)

        warm = min(S - s - 1, M)
        for i in range(warm):
            forward(i)
        for i in range(M - warm):
            forward(warm + i)
            backward(i)
        for i in range(M - warm, M):
            backward(i)
        for request, _ in self._sends:
            self._wait(request, "a send to a neighbouring pipeline stage")
        self._sends.clear()
        self._average_gradients()
        loss = np.array([float(np.dot(losses, sizes) / n)])
        bcast_(self.pipe, loss, root=S - 1, what="broadcast of the pipeline's loss")
        self._stats += (1, time.perf_counter() - started, self._idle)
        return float(loss[0])

    def _device(self):
        first = next(iter(self.parameters()), None)
        return "cpu" if first is None else backend.device_of(first.data)

    def _average_gradients(self):
        """Average this stage's gradients over the data-parallel group (replicas)."""
        if self.replicas == 1:
            return
        params = [p for p in self.parameters() if p.requires_grad]
        grads = [np.zeros(p.data.shape, p.data.dtype) if p.grad is None else backend.to_device(p.grad.data, "cpu")
                 for p in params]
        flat = np.concatenate([g.reshape(-1) for g in grads])
        with self.timeline.span("gradient allreduce", COMMUNICATION):
            if self.deterministic:  # every replica's gradient, summed in replica order on every rank
                rows = allgather(self.dp, flat, what="allgather of pipeline-stage gradients")
                flat = rows[0].copy()
                for row in rows[1:]:
                    flat += row
            else:
                allreduce_(self.dp, flat, what="allreduce of pipeline-stage gradients")
        flat /= self.replicas
        at = 0
        for p, g in zip(params, grads):
            part = flat[at:at + g.size].reshape(g.shape).astype(p.data.dtype)
            at += g.size
            p.grad = Tensor(backend.to_device(part, backend.device_of(p.data)))

    # -- evaluation ------------------------------------------------------------------------
    def predict(self, inputs, batch_size):
        """The model's output for a batch, on the last stage (None on the others). Every stage of the
        replica calls it with the same ``batch_size`` (the number of rows in ``inputs``)."""
        with no_grad():
            if self.is_first:
                x = inputs
            else:
                trailing, dtype = self._input_signature()
                x = Tensor(backend.to_device(self._recv((batch_size,) + trailing, dtype, self.stage - 1,
                                                        ACTIVATION, 2 ** 12), self._device()))
            y = self.module(x)
            if self.is_last:
                return y
            self._agree_signature(y.data)
            self._send(y.data, self.stage + 1, ACTIVATION, 2 ** 12)
            for request, _ in self._sends:
                self._wait(request, "a send to a neighbouring pipeline stage")
            self._sends.clear()
            return None

    def stats(self):
        """Per step on this rank: ``step_ms``, ``idle_ms`` (waiting for neighbours) and
        ``bubble_fraction`` = idle / step, beside 1F1B's ideal (S - 1) / (M + S - 1)."""
        steps, busy, idle = self._stats
        steps = max(steps, 1.0)
        return {"stage": self.stage, "steps": int(self._stats[0]), "step_ms": busy / steps * 1e3,
                "idle_ms": idle / steps * 1e3, "bubble_fraction": idle / busy if busy else 0.0,
                "ideal_bubble_fraction": (self.stages - 1) / (self.micro_batches + self.stages - 1)}
