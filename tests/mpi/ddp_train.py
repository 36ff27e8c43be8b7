"""Launched by tests/test_distributed.py under ``mpirun -np N``: train the digits CNN with
DistributedDataParallel, then replay the same steps in one process on rank 0 and print how far
apart the two runs ended. ``--modes`` lists the modes to run one after the other in the same job
(one start-up for several checks); rank 0 prints one JSON line, ``{mode: result}``.

Every rank seeds its initialisation differently on purpose: only the start-of-training
broadcast can make the ranks agree, so the comparison tests it too.

Modes:
  allreduce      per-rank batch B on N ranks  vs  one process with batch B*N
  deterministic  the same, but compared bitwise with one process accumulating the N per-rank
                 micro-batches in rank order, then dividing by N
  bf16           allreduce with bf16 wire compression (compared loosely)
  no_sync        K=2 micro-batches per step under no_sync()  vs  one process with batch K*B*N
(DistributedTrainer over whole epochs is checked through the real CLI: cli_train.py.)
Run with OMP_NUM_THREADS=1 in every process: bitwise comparisons between processes are only
meaningful when every process runs each kernel with the same number of threads.
"""
import argparse
import contextlib
import json
import sys

import numpy as np

import pyneural as pn
import pyneural.distributed as dist
from pyneural import models
from pyneural import functional as F
from pyneural.data import DataLoader
from pyneural.datasets import digits
from pyneural.optim import SGD

SEED, DATA_SEED, LR, MOMENTUM = 1234, 7, 0.05, 0.9
MODES = ("allreduce", "deterministic", "bf16", "no_sync")


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--modes", type=lambda t: t.split(","), required=True,
                   help="comma-separated, from: " + ", ".join(MODES))
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--batch", type=int, default=16, help="per-rank micro-batch")
    p.add_argument("--bucket-cap-mb", type=float, default=0.05, help="small, so the CNN spans several buckets")
    p.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    p.add_argument("--trace", default=None, help="trace of the first mode")
    args = p.parse_args()
    unknown = [m for m in args.modes if m not in MODES]
    if unknown:
        p.error(f"unknown modes {unknown}")
    return args


def flat_params(model):
    return np.concatenate([p.data.reshape(-1) for p in model.parameters()])


def train_distributed(args, mode, world, train_set, micro_steps, trace):
    pn.manual_seed(SEED + 1000 * world.rank)
    model = models.MODELS[args.model]()
    timeline = dist.Timeline(world, enabled=trace is not None)
    timeline.start()
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=args.bucket_cap_mb, timeline=timeline,
                                       deterministic=mode == "deterministic",
                                       compress="bf16" if mode == "bf16" else None)
    sampler = dist.DistributedSampler(train_set, seed=DATA_SEED)
    loader = DataLoader(train_set, batch_size=args.batch, sampler=sampler, prefetch=0)
    opt = SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    batches = iter(loader)
    for _ in range(args.steps):
        opt.zero_grad()
        for k in range(micro_steps):
            with timeline.span("data wait"):
                x, y = next(batches)
            sync = ddp.no_sync() if k < micro_steps - 1 else contextlib.nullcontext()
            with sync:
                loss = F.cross_entropy(ddp(x), y)
                with timeline.span("backward"):
                    loss.backward()
        ddp.finish_gradient_sync()
        if micro_steps > 1:
            for p in model.parameters():
                p.grad.data /= micro_steps
        with timeline.span("optimizer step"):
            opt.step()
    summary = ddp.comm_summary()
    if trace:
        timeline.write(trace, summary)
    ddp.remove_hooks()
    return model, ddp, summary


def reference_global_batch(args, train_set, world_size, micro_steps):
    """One process, batch B*N*K, the DataLoader's own shuffling with the same seed."""
    pn.manual_seed(SEED)
    model = models.MODELS[args.model]()
    loader = DataLoader(train_set, batch_size=args.batch * world_size * micro_steps, shuffle=True,
                        seed=DATA_SEED, prefetch=0)
    opt = SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    batches = iter(loader)
    for _ in range(args.steps):
        x, y = next(batches)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def reference_accumulated(args, train_set, world_size):
    """One process visiting rank 0's, rank 1's, ... micro-batch of each step, accumulating."""
    pn.manual_seed(SEED)
    model = models.MODELS[args.model]()
    loaders = [iter(DataLoader(train_set, batch_size=args.batch, prefetch=0,
                               sampler=dist.DistributedSampler(train_set, world_size, r, seed=DATA_SEED)))
               for r in range(world_size)]
    opt = SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    for _ in range(args.steps):
        opt.zero_grad()
        for r in range(world_size):
            x, y = next(loaders[r])
            F.cross_entropy(model(x), y).backward()
        for p in model.parameters():
            p.grad.data /= world_size
        opt.step()
    return model


def run_mode(args, mode, world, train_set, trace):
    """Train in ``mode``; on rank 0 return the comparison with one process (None elsewhere)."""
    micro_steps = 2 if mode == "no_sync" else 1
    model, ddp, summary = train_distributed(args, mode, world, train_set, micro_steps, trace)
    mine = flat_params(model)
    gathered = np.empty((world.size, mine.size), dtype=mine.dtype)
    world.comm.Allgather(mine, gathered)
    if world.rank != 0:
        return None
    if mode == "deterministic":
        ref = flat_params(reference_accumulated(args, train_set, world.size))
    else:
        ref = flat_params(reference_global_batch(args, train_set, world.size, micro_steps))
    return {
        "ranks_bitwise_identical": all(np.array_equal(gathered[0], g) for g in gathered[1:]),
        "rel_err_vs_reference": float(np.linalg.norm(mine.astype(np.float64) - ref) / np.linalg.norm(ref)),
        "bitwise_equal_reference": bool(np.array_equal(mine, ref)),
        "buckets": len(ddp.reducer.buckets),
        "wire_bytes_per_step": ddp.reducer.wire_nbytes(),
        "param_bytes": int(mine.nbytes),
        "summary": summary,
    }


def main():
    args = parse()
    world = dist.init(timeout=60)
    train_set, _ = digits()
    results = {}
    for i, mode in enumerate(args.modes):
        results[mode] = run_mode(args, mode, world, train_set, args.trace if i == 0 else None)
    if world.rank == 0:
        print(json.dumps(results))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
