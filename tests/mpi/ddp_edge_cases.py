"""Launched by tests/test_distributed.py under ``mpirun -np 2``: jobs that go wrong on purpose,
and corner cases of a training round.

  mismatch        rank 1 builds a narrower model: construction must fail on every rank, naming
                  the first differing parameter
  hang            rank 1 stops participating before its third backward: rank 0's wait must time
                  out and abort the job, naming the bucket and rank 1 (with --thread-level
                  funneled, through the watchdog's polling path)
  raise           rank 1 raises in the middle of training: the excepthook must abort every rank
  unused          a parameter gets a gradient on rank 0 only; finish_gradient_sync() completes
                  the round, and both ranks must still end bitwise identical (prints JSON)
  unused_no_finish  the same without finish_gradient_sync(): the next forward must raise,
                  naming the parameter
  buffers         a BatchNorm model whose running statistics drift apart per rank: after
                  training, every rank holds rank 0's buffers, bitwise (prints JSON)
"""
import argparse
import json
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


def run_mlp(args, world):
    pn.manual_seed(world.rank)
    model = models.mlp(hidden=32 if (args.mode == "mismatch" and world.rank == 1) else 64)
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=0.01)
    opt = SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(world.rank)
    for step in range(5):
        if step == 2 and world.rank == 1:
            if args.mode == "hang":
                time.sleep(600)
            if args.mode == "raise":
                raise RuntimeError("deliberate failure on rank 1")
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
        if args.mode == "unused":
            ddp.finish_gradient_sync()
        opt.step()
    flat = np.concatenate([p.data.reshape(-1) for p in model.parameters()])
    gathered = np.empty((world.size, flat.size), dtype=flat.dtype)
    world.comm.Allgather(flat, gathered)
    if world.rank == 0:
        print(json.dumps({"ranks_bitwise_identical": bool(np.array_equal(gathered[0], gathered[1])),
                          "extra_changed": bool(not np.array_equal(extra_before, model.extra.weight.data))}))


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
    if world.rank == 0:
        print(json.dumps({"state_bitwise_identical": bool(np.array_equal(gathered[0], gathered[1])),
                          "buffers": len(list(model.named_buffers()))}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["mismatch", "hang", "raise", "unused", "unused_no_finish", "buffers"],
                   required=True)
    p.add_argument("--timeout", type=float, default=3.0)
    p.add_argument("--thread-level", choices=["multiple", "funneled"], default="multiple",
                   help="funneled: MPI without thread support, so the watchdog polls instead")
    args = p.parse_args()
    import mpi4py
    mpi4py.rc.thread_level = args.thread_level
    world = dist.init(timeout=args.timeout)
    if args.mode.startswith("unused"):
        run_unused(args, world)
    elif args.mode == "buffers":
        run_buffers(world)
    else:
        run_mlp(args, world)


if __name__ == "__main__":
    main()
