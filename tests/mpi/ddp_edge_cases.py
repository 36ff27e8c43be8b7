"""Launched by tests/test_distributed.py under ``mpirun -np 2``: jobs that go wrong on purpose,
and corner cases of a training round.

  mismatch        rank 1 builds a narrower model: construction must fail on every rank, naming
                  the first differing parameter
  hang            rank 1 stops participating before its third backward: rank 0's wait must time
                  out and abort the job, naming the bucket and rank 1 (with --thread-level
                  funneled, through the watchdog's polling path)
  raise           rank 1 raises in the middle of training (printing the time it does): the
                  excepthook must abort every rank
  victim          both ranks print their pids, then train until the test stops (SIGSTOP) or kills
                  (SIGKILL) rank 1 (it prints "rank 1 training" at its third step): the watchdog, or
                  the launcher, must end the job and name rank 1
  unused_no_finish  a parameter gets a gradient on rank 0 only, and nobody calls
                  finish_gradient_sync(): the next forward must raise, naming the parameter
  ok              the cases that succeed, in one job; rank 0 prints one JSON line with
      unused      the same with finish_gradient_sync(), which completes the round: both ranks
                  must still end bitwise identical
      buffers     a BatchNorm model whose running statistics drift apart per rank: after
                  training, every rank holds rank 0's buffers, bitwise
      fake_gpu    the device paths with CuPy faked (fake_cupy.py): buckets of device gradients
                  staged through pinned host buffers or handed to MPI directly, plain,
                  deterministic and bf16; and the doctor's device self-test, once with a
                  "CUDA-aware" MPI that works and once with one that refuses device buffers
"""
import argparse
import copy
import json
import os
import time

import numpy as np

import pyneural as pn
import pyneural.distributed as dist
from pyneural import functional as F
from pyneural import models, nn
from pyneural.optim import SGD


class TwoHeads(nn.Module):
    """A trunk and two heads; ``use_extra`` decides per call whether the second head runs."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Linear(8, 16)
        self.head = nn.Linear(16, 4)
        self.extra = nn.Linear(16, 4)

    def forward(self, x, use_extra):
        h = F.relu(self.trunk(x))
        out = self.head(h)
        return out + self.extra(h) if use_extra else out


VICTIM_STEPS = 100_000  # minutes of training: the test signals rank 1 long before the end


def run_mlp(args, world):
    pn.manual_seed(world.rank)
    model = models.mlp(hidden=32 if (args.mode == "mismatch" and world.rank == 1) else 64)
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=0.01)
    opt = SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(world.rank)
    if args.mode == "victim":
        print(f"pid {world.rank} {os.getpid()}", flush=True)
    for step in range(VICTIM_STEPS if args.mode == "victim" else 5):
        if step == 2 and world.rank == 1:
            if args.mode == "hang":
                time.sleep(600)
            if args.mode == "raise":
                print(f"rank 1 raising at {time.time():.6f}", flush=True)
                raise RuntimeError("deliberate failure on rank 1")
            if args.mode == "victim":
                print("rank 1 training", flush=True)
        x = pn.Tensor(rng.standard_normal((8, 1, 8, 8)).astype(np.float32))
        y = pn.Tensor(rng.integers(0, 10, 8))
        opt.zero_grad()
        F.cross_entropy(ddp(x), y).backward()
        opt.step()
    if world.rank == 0:
        print("completed all steps")


def run_unused(args, world):
    pn.manual_seed(world.rank)
    model = TwoHeads()
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=0.0005)
    opt = SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(world.rank)
    extra_before = model.extra.weight.data.copy()
    for step in range(3):
        x = pn.Tensor(rng.standard_normal((4, 8)).astype(np.float32))
        opt.zero_grad()
        out = ddp(x, use_extra=(world.rank == 0))
        (out * out).mean().backward()
        if args.mode == "ok":
            ddp.finish_gradient_sync()
        opt.step()
    flat = np.concatenate([p.data.reshape(-1) for p in model.parameters()])
    gathered = np.empty((world.size, flat.size), dtype=flat.dtype)
    world.comm.Allgather(flat, gathered)
    ddp.remove_hooks()
    return {"ranks_bitwise_identical": bool(np.array_equal(gathered[0], gathered[1])),
            "extra_changed": bool(not np.array_equal(extra_before, model.extra.weight.data))}


def run_buffers(world):
    pn.manual_seed(world.rank)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=0.001)
    opt = SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(world.rank)
    for _ in range(3):
        x = pn.Tensor((rng.standard_normal((6, 8)) + world.rank).astype(np.float32))
        opt.zero_grad()
        (ddp(x) ** 2).mean().backward()
        opt.step()
    ddp(pn.Tensor(np.zeros((2, 8), dtype=np.float32)))  # the broadcast happens before each training forward
    state = np.concatenate([a.reshape(-1).astype(np.float64) for a in model.state_dict().values()])
    gathered = np.empty((world.size, state.size))
    world.comm.Allgather(state, gathered)
    return {"state_bitwise_identical": bool(np.array_equal(gathered[0], gathered[1])),
            "buffers": len(list(model.named_buffers()))}


class RefusesDeviceBuffers:
    """A communicator whose MPI claims CUDA-awareness but cannot read device memory."""

    def __init__(self, comm, device_type):
        self._comm, self._device_type = comm, device_type

    def Iallreduce(self, sendbuf, recvbuf, *args, **kwargs):
        if isinstance(recvbuf, self._device_type):
            raise BufferError("fake MPI: cannot read device memory")
        return self._comm.Iallreduce(sendbuf, recvbuf, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._comm, name)


def run_fake_gpu(world):
    import fake_cupy
    from pyneural.distributed import doctor
    from pyneural.distributed.bucket import GradReducer
    sizes, steps, mean = (1000, 37, 5000), 2, (world.size + 1) / 2
    result = {}
    with fake_cupy.installed() as cupy:
        for label, options in (("staged", {}), ("direct", {"device_direct": True}),
                               ("deterministic_staged", {"deterministic": True}),
                               ("deterministic_direct", {"deterministic": True, "device_direct": True}),
                               ("bf16_direct_requested", {"compress": "bf16", "device_direct": True})):
            grads = [cupy.full(n, world.rank + 1, dtype=cupy.float32) for n in sizes]
            fake_cupy.reset_counts()
            reducer = GradReducer(world, [(f"g{i}", g) for i, g in enumerate(grads)], cap_bytes=8000, **options)
            correct = True
            for _ in range(steps):
                reducer.begin()
                for i in reversed(range(len(grads))):
                    reducer.grad_ready(i, grads[i])
                reducer.finish()
                for i, n in enumerate(sizes):
                    out = cupy.empty(n, dtype=cupy.float32)
                    reducer.average_into(i, out)
                    correct &= type(out) is fake_cupy.DeviceArray and bool(np.all(cupy.asnumpy(out) == mean))
            result[label] = {"buckets": len(reducer.buckets), "steps": steps, "correct": correct,
                             "counts": dict(fake_cupy.COUNTS)}
        for label, comm in (("doctor_cuda_aware", world.comm),
                            ("doctor_cuda_aware_broken", RefusesDeviceBuffers(world.comm, fake_cupy.DeviceArray))):
            probe = copy.copy(world)
            probe.comm = comm
            tests, path = doctor._device_tests(probe, True)
            result[label] = {"path": path, "tests": [list(t) for t in tests]}
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["mismatch", "hang", "raise", "victim", "unused_no_finish", "ok"], required=True)
    p.add_argument("--timeout", type=float, default=2.0)
    p.add_argument("--thread-level", choices=["multiple", "funneled"], default="multiple",
                   help="funneled: MPI without thread support, so the watchdog polls instead")
    args = p.parse_args()
    import mpi4py
    mpi4py.rc.thread_level = args.thread_level
    world = dist.init(timeout=args.timeout)
    if args.mode == "unused_no_finish":
        run_unused(args, world)
    elif args.mode == "ok":
        result = {"unused": run_unused(args, world), "buffers": run_buffers(world), "fake_gpu": run_fake_gpu(world)}
        if world.rank == 0:
            print(json.dumps(result))
    else:
        run_mlp(args, world)


if __name__ == "__main__":
    main()
