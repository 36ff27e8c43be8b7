"""Launched by tests/test_distributed.py under ``mpirun -np N``: train the digits CNN with
DistributedDataParallel, then replay the same steps in one process on rank 0 and print how far
apart the two runs ended (one JSON line on stdout, rank 0 only).

Every rank seeds its initialisation differently on purpose: only the start-of-training
broadcast can make the ranks agree, so the comparison tests it too.

Modes:
  allreduce      per-rank batch B on N ranks  vs  one process with batch B*N
  deterministic  the same, but compared bitwise with one process accumulating the N per-rank
                 micro-batches in rank order, then dividing by N
  bf16           allreduce with bf16 wire compression (compared loosely)
  no_sync        K=2 micro-batches per step under no_sync()  vs  one process with batch K*B*N
  trainer        DistributedTrainer for --epochs whole epochs (the padded, unevenly split last
                 step included)  vs  pyneural.trainer.Trainer in one process with batch B*N
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


def parse():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["allreduce", "deterministic", "bf16", "no_sync", "trainer"], required=True)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--epochs", type=int, default=2, help="trainer mode only")
    p.add_argument("--batch", type=int, default=16, help="per-rank micro-batch")
    p.add_argument("--bucket-cap-mb", type=float, default=0.05, help="small, so the CNN spans several buckets")
    p.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
    p.add_argument("--trace", default=None)
    return p.parse_args()


def flat_params(model):
    return np.concatenate([p.data.reshape(-1) for p in model.parameters()])


def train_distributed(args, world, train_set, micro_steps):
    pn.manual_seed(SEED + 1000 * world.rank)
    model = models.MODELS[args.model]()
    timeline = dist.Timeline(world, enabled=args.trace is not None)
    timeline.start()
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=args.bucket_cap_mb, timeline=timeline,
                                       deterministic=args.mode == "deterministic",
                                       compress="bf16" if args.mode == "bf16" else None)
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
    if args.trace:
        timeline.write(args.trace, summary)
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


def train_with_trainers(args, world, train_set):
    """(distributed model, its DDP, summary, single-process model) trained by the Trainers."""
    from pyneural.distributed.training import DistributedTrainer
    from pyneural.trainer import Trainer
    pn.manual_seed(SEED + 1000 * world.rank)
    model = models.MODELS[args.model]()
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=args.bucket_cap_mb)
    loader = DataLoader(train_set, batch_size=args.batch, sampler=dist.DistributedSampler(train_set, seed=DATA_SEED),
                        prefetch=0)
    DistributedTrainer(ddp, SGD(model.parameters(), lr=LR, momentum=MOMENTUM)).fit(loader, args.epochs)
    summary = ddp.comm_summary()
    if world.rank != 0:
        return model, ddp, summary, None
    pn.manual_seed(SEED)
    single = models.MODELS[args.model]()
    loader = DataLoader(train_set, batch_size=args.batch * world.size, shuffle=True, seed=DATA_SEED, prefetch=0)
    Trainer(single, SGD(single.parameters(), lr=LR, momentum=MOMENTUM)).fit(loader, args.epochs)
    return model, ddp, summary, single


def main():
    args = parse()
    world = dist.init(timeout=60)
    train_set, _ = digits()
    micro_steps = 2 if args.mode == "no_sync" else 1
    if args.mode == "trainer":
        model, ddp, summary, single = train_with_trainers(args, world, train_set)
    else:
        model, ddp, summary = train_distributed(args, world, train_set, micro_steps)
    mine = flat_params(model)
    gathered = np.empty((world.size, mine.size), dtype=mine.dtype)
    world.comm.Allgather(mine, gathered)
    if world.rank != 0:
        return
    if args.mode == "trainer":
        ref = flat_params(single)
    elif args.mode == "deterministic":
        ref = flat_params(reference_accumulated(args, train_set, world.size))
    else:
        ref = flat_params(reference_global_batch(args, train_set, world.size, micro_steps))
    result = {
        "ranks_bitwise_identical": all(np.array_equal(gathered[0], g) for g in gathered[1:]),
        "rel_err_vs_reference": float(np.linalg.norm(mine.astype(np.float64) - ref) / np.linalg.norm(ref)),
        "bitwise_equal_reference": bool(np.array_equal(mine, ref)),
        "buckets": len(ddp.reducer.buckets),
        "wire_bytes_per_step": ddp.reducer.wire_nbytes(),
        "param_bytes": int(mine.nbytes),
        "summary": summary,
    }
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
