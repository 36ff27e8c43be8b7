"""The utilization report printed at the end of ``pyneural train`` (and written as JSON with
``--report PATH``): where the wall time went, how fast the model's matmul and conv work ran
against what the device can do, and, on a GPU, what NVML saw.

Time split. The trainer times each optimizer step (forward, backward, update: "compute"), the
loader times each wait for a batch ("data wait"), the distributed layer reports the part of each
step spent waiting for gradient collectives ("communication wait", taken out of compute). "Host
overhead" is the rest of the training wall time: evaluation, checkpointing, logging, Python
between steps. The four add up to the wall time by construction.

FLOPs. ``count_flops`` runs the model once in eval mode on a sample batch (no parameter, buffer
or RNG changes) and walks the autograd graph it built: every GEMM (Linear, MatMul) counts
2*M*N*K, every convolution 2*N*O*Ho*Wo*(C/groups)*kh*kw, and the backward pass counts the same
again for each input gradient the graph will really compute (the data gradient of a first layer
is skipped, as the kernels skip it). Elementwise work is not counted: the report is about the
kernels that can approach peak. Costs scale with the batch, so one probe gives FLOPs per sample.

Peak. ``measured_peak_gflops`` times pyneural's own float32 GEMM on a square problem once per
process (best of a few runs): the ceiling our kernels reach on this machine, measured, not a
datasheet number.
"""
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field

import numpy as np


# ---- FLOPs of one training step, from the autograd graph -------------------------------------

def _gemm_flops(m, n, k):
    return 2 * int(m) * int(n) * int(k)


def _function_flops(fn):
    """(forward, backward) FLOPs of one graph node; (0, 0) for anything but GEMM/conv."""
    from .functions.conv import Conv2d, conv_output_size
    from .functions.matmul import Linear, MatMul
    needs = fn.needs_input_grad
    if isinstance(fn, Linear):
        (m, k), n = fn.x2.shape, fn.w.shape[0]
        one = _gemm_flops(m, n, k)
        return one, one * (int(needs[0]) + int(needs[1]))
    if isinstance(fn, MatMul):
        a_shape = fn.a.shape if fn.a.ndim > 1 else (1,) + fn.a.shape
        b_shape = fn.b.shape if fn.b.ndim > 1 else fn.b.shape + (1,)
        batch = int(np.prod(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]), dtype=np.int64))
        one = batch * _gemm_flops(a_shape[-2], b_shape[-1], a_shape[-1])
        return one, one * (int(needs[0]) + int(needs[1]))
    if isinstance(fn, Conv2d):
        n, c, h, w = fn.x.shape
        o, c_per_group, kh, kw = fn.w.shape
        ho = conv_output_size(h, kh, fn.stride[0], fn.padding[0], fn.dilation[0])
        wo = conv_output_size(w, kw, fn.stride[1], fn.padding[1], fn.dilation[1])
        one = 2 * n * o * ho * wo * c_per_group * kh * kw
        return one, one * (int(needs[0]) + int(needs[1]))
    return 0, 0


def graph_flops(output):
    """(forward, backward) FLOPs of the GEMM and conv nodes in the graph that produced ``output``
    (a Tensor), walked before its backward runs."""
    from .tensor import Function
    forward = backward = 0
    seen, stack = set(), [output._creator] if output._creator is not None else []
    while stack:
        fn = stack.pop()
        if id(fn) in seen:
            continue
        seen.add(id(fn))
        f, b = _function_flops(fn)
        forward, backward = forward + f, backward + b
        stack.extend(p for p in fn.parents if isinstance(p, Function))
    return forward, backward


def count_flops(model, loss_fn, inputs, targets):
    """FLOPs per sample of one training step (forward + backward) of ``model`` under ``loss_fn``,
    probed on the batch ``(inputs, targets)`` in eval mode: nothing the training depends on
    (parameters, BatchNorm statistics, the random generators) changes. Returns a dict."""
    from .tensor import enable_grad
    was_training = model.training
    model.eval()
    try:
        with enable_grad():
            loss = loss_fn(model(inputs), targets)
            forward, backward = graph_flops(loss)
    finally:
        model.train(was_training)
    batch = len(targets)
    return {"forward_per_sample": forward / batch, "backward_per_sample": backward / batch,
            "train_per_sample": (forward + backward) / batch}


# ---- the device's measured peak -------------------------------------------------------------

_peak_cache = {}


def measured_peak_gflops(device="cpu", size=1024, repeats=5):
    """Best GFLOP/s of a ``size``^3 float32 GEMM on ``device`` over ``repeats`` runs, measured
    once per process and cached."""
    key = (device, size)
    if key not in _peak_cache:
        if device == "cpu":
            _peak_cache[key] = _cpu_peak(size, repeats)
        elif device == "cuda":
            _peak_cache[key] = _cuda_peak(size, repeats)
        else:
            raise ValueError(f"measured_peak_gflops: device must be 'cpu' or 'cuda', got {device!r}")
    return _peak_cache[key]


def _cpu_peak(size, repeats):
    from .kernels.gemm import gemm
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    out = np.empty((size, size), dtype=np.float32)
    gemm(a, b, out=out)  # warm-up: page in, pack buffers
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        gemm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return _gemm_flops(size, size, size) / best / 1e9


def _cuda_peak(size, repeats):
    from pyneural.cuda import _backend
    cupy = _backend.cupy()  # CuPy, or the emulated device's namespace
    a = cupy.random.standard_normal((size, size), dtype=cupy.float32)
    b = cupy.random.standard_normal((size, size), dtype=cupy.float32)
    a @ b
    start, stop = cupy.cuda.Event(), cupy.cuda.Event()
    best = float("inf")
    for _ in range(repeats):
        start.record()
        a @ b
        stop.record()
        stop.synchronize()
        best = min(best, cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return _gemm_flops(size, size, size) / best / 1e9


# ---- GPU sampling through NVML --------------------------------------------------------------

class NvmlSampler:
    """Samples GPU utilization and memory in use every ``interval`` seconds on a daemon thread,
    through NVML (the ``nvidia-ml-py`` package, imported as ``pynvml``). ``start`` raises
    ImportError when the package is missing; the train command then reports without it."""

    def __init__(self, device_index=0, interval=0.1):
        if not interval > 0:
            raise ValueError(f"NvmlSampler: interval must be > 0 seconds, got {interval!r}")
        self.device_index, self.interval = int(device_index), float(interval)
        self.utilization, self.memory_used = [], []
        self.memory_total = None
        self.name = None
        self._stop = threading.Event()
        self._thread = None

    def start(self):
        import pynvml
        self._nvml = pynvml
        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(self.device_index)
        self._handle = handle
        name = pynvml.nvmlDeviceGetName(handle)
        self.name = name.decode() if isinstance(name, bytes) else str(name)
        self.memory_total = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
        self._sample()
        self._thread = threading.Thread(target=self._run, name="pyneural-nvml", daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        self.utilization.append(float(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
        self.memory_used.append(int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used))

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def stop(self):
        """Stop sampling (one last sample first) and shut NVML down; returns ``summary()``."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._sample()
            self._nvml.nvmlShutdown()
        return self.summary()

    def summary(self):
        if not self.utilization:
            return None
        return {"name": self.name, "samples": len(self.utilization),
                "utilization_mean_percent": float(np.mean(self.utilization)),
                "utilization_max_percent": float(np.max(self.utilization)),
                "memory_used_max_bytes": int(np.max(self.memory_used)),
                "memory_total_bytes": self.memory_total}


# ---- the report -----------------------------------------------------------------------------

@dataclass
class UtilizationReport:
    """Everything the report says; build with ``build_report``."""
    device: str
    wall_s: float
    compute_s: float
    data_wait_s: float
    comm_wait_s: float
    host_overhead_s: float
    steps: int
    samples: int
    flops_per_sample: float
    achieved_gflops: float
    peak_gflops: float
    details: dict = field(default_factory=dict)
    gpu: dict = None

    def as_dict(self):
        out = asdict(self)
        out["fraction_of_peak"] = self.achieved_gflops / self.peak_gflops if self.peak_gflops > 0 else None
        out["split_percent"] = {k: 100 * getattr(self, k) / self.wall_s if self.wall_s > 0 else 0.0
                                for k in ("compute_s", "data_wait_s", "comm_wait_s", "host_overhead_s")}
        return out

    def format(self):
        def share(seconds):
            return f"{seconds:8.3f} s {100 * seconds / self.wall_s if self.wall_s > 0 else 0:5.1f}%"
        ranks = self.details.get("ranks", 1)
        scope = f", rank 0 of {ranks}" if ranks > 1 else ""
        lines = [f"utilization report ({self.device}{scope}, {self.steps} steps, {self.samples} samples)",
                 f"  training wall time    {self.wall_s:8.3f} s",
                 f"  compute               {share(self.compute_s)}",
                 f"  data wait             {share(self.data_wait_s)}"]
        if self.details.get("distributed"):
            lines.append(f"  communication wait    {share(self.comm_wait_s)}")
        lines.append(f"  host overhead         {share(self.host_overhead_s)}")
        parts = [f"{name} {self.details[key]:.3f} s" for name, key in
                 (("evaluation", "eval_s"), ("checkpointing", "checkpoint_s")) if self.details.get(key)]
        if parts:
            lines.append("    of which " + ", ".join(parts))
        percent = 100 * self.achieved_gflops / self.peak_gflops if self.peak_gflops > 0 else float("nan")
        lines.append(f"  matmul+conv work      {self.flops_per_sample / 1e6:.2f} MFLOP/sample (fwd+bwd); "
                     f"{self.achieved_gflops:.1f} GFLOP/s during compute = {percent:.1f}% of the measured "
                     f"peak {self.peak_gflops:.1f} GFLOP/s ({self.details.get('peak_method', 'GEMM')})")
        if self.gpu:
            g = self.gpu
            lines.append(f"  GPU {g['name']}: utilization mean {g['utilization_mean_percent']:.0f}% "
                         f"(max {g['utilization_max_percent']:.0f}%), memory max "
                         f"{g['memory_used_max_bytes'] / 2**20:,.0f} / {g['memory_total_bytes'] / 2**20:,.0f} MiB "
                         f"({g['samples']} samples)")
        return "\n".join(lines)

    def write_json(self, path):
        """Write the report as JSON (atomically: a reader never sees half a file)."""
        path = os.fspath(path)
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(self.as_dict(), f, indent=2)
            f.write("\n")
        os.replace(tmp, path)


def build_report(*, wall_s, compute_s, data_wait_s, steps, samples, flops_per_sample, peak_gflops,
                 comm_wait_s=0.0, device="cpu", details=None, gpu=None):
    """A report from the measured times. ``compute_s`` is the time inside optimizer steps,
    communication wait included; it is taken out here so the four parts add up to ``wall_s``."""
    for name, value in (("wall_s", wall_s), ("compute_s", compute_s), ("data_wait_s", data_wait_s),
                        ("comm_wait_s", comm_wait_s)):
        if not value >= 0:
            raise ValueError(f"build_report: {name} must be a time >= 0 seconds, got {value!r}")
    comm = min(comm_wait_s, compute_s)
    compute = compute_s - comm
    host = max(wall_s - compute - comm - data_wait_s, 0.0)
    achieved = flops_per_sample * samples / compute / 1e9 if compute > 0 else 0.0
    return UtilizationReport(device=device, wall_s=wall_s, compute_s=compute, data_wait_s=data_wait_s,
                             comm_wait_s=comm, host_overhead_s=host, steps=int(steps), samples=int(samples),
                             flops_per_sample=float(flops_per_sample), achieved_gflops=achieved,
                             peak_gflops=float(peak_gflops), details=dict(details or {}), gpu=gpu)
