"""Pipeline (and pipeline x data-parallel) training on digits, for tests/test_pipeline.py.

    mpirun -np 4 python pipeline_train.py --stages 2 --micro 3 --steps 4 [--deterministic]
    python pipeline_train.py --reference accumulate|full --replicas 2 --micro 3 --steps 4

Prints one JSON line on rank 0: the per-step losses (this replica's, averaged over replicas) and the
final parameters' sums and first values, for comparison with one process training the same global
batches: ``accumulate`` replays the pipeline's exact arithmetic (micro-batches accumulated in order,
replicas summed in order), ``full`` takes one step per whole global batch.
"""
import argparse
import json

import numpy as np

import pyneural as pn
from pyneural import models
from pyneural.datasets import digits

p = argparse.ArgumentParser()
p.add_argument("--stages", type=int, default=2)
p.add_argument("--micro", type=int, default=3)
p.add_argument("--steps", type=int, default=4)
p.add_argument("--batch", type=int, default=30, help="per-replica batch")
p.add_argument("--model", default="cnn")
p.add_argument("--deterministic", action="store_true")
p.add_argument("--reference", choices=("accumulate", "full"), default=None)
p.add_argument("--replicas", type=int, default=1, help="(reference) data-parallel replicas to replay")
p.add_argument("--fail", choices=("none", "raise", "stall"), default="none")
p.add_argument("--timeout", type=float, default=60.0)
args = p.parse_args()

pn.manual_seed(0)
model = getattr(models, args.model)()
train, _ = digits()
x_all, y_all = train.arrays


def batch(step, replica, replicas):
    start = step * args.batch * replicas + replica * args.batch
    return pn.tensor(x_all[start:start + args.batch]), pn.tensor(y_all[start:start + args.batch])


def summary(named):
    return {name: [float(np.asarray(p.detach().numpy(), np.float64).sum()), float(p.detach().numpy().reshape(-1)[0])]
            for name, p in named}


if args.reference:
    opt = pn.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step in range(args.steps):
        opt.zero_grad()
        if args.reference == "full":
            xs, ys = zip(*[batch(step, r, args.replicas) for r in range(args.replicas)])
            x, y = pn.cat(xs), pn.cat(ys)
            loss = pn.functional.cross_entropy(model(x), y)
            loss.backward()
            losses.append(loss.item())
        else:
            total = None
            replica_losses = []
            for r in range(args.replicas):
                for q in model.parameters():
                    q.grad = None
                x, y = batch(step, r, args.replicas)
                n, m = len(y), min(args.micro, len(y))
                sizes = [n // m + (1 if i < n % m else 0) for i in range(m)]
                at, lsum = 0, 0.0
                for size in sizes:
                    loss = pn.functional.cross_entropy(model(x[at:at + size]), y[at:at + size])
                    (loss * (size / n)).backward()
                    lsum += loss.item() * size
                    at += size
                replica_losses.append(lsum / n)
                grads = [q.grad.numpy().copy() for q in model.parameters()]
                total = grads if total is None else [t + g for t, g in zip(total, grads)]
            for q, t in zip(model.parameters(), total):
                q.grad = pn.tensor(t / args.replicas)
            losses.append(float(np.mean(replica_losses)))
        opt.step()
    print(json.dumps({"losses": losses, "params": summary(model.named_parameters())}))
else:
    import time
    import pyneural.distributed as dist
    from pyneural.distributed.collectives import allreduce_, gather_bytes
    world = dist.init(timeout=args.timeout)
    pipe = dist.Pipeline(model, stages=args.stages, micro_batches=args.micro, deterministic=args.deterministic)
    opt = pn.optim.SGD(pipe.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step in range(args.steps):
        if args.fail == "raise" and step == 1 and pipe.stage == 1:
            raise RuntimeError("planted failure in stage 1")
        if args.fail == "stall" and step == 1 and pipe.stage == pipe.stages - 1:
            time.sleep(3600)
        x, y = batch(step, pipe.replica, pipe.replicas)
        pipe.zero_grad()
        loss = pipe.train_step(x if pipe.is_first else None, y)
        opt.step()
        total = np.array([loss])
        allreduce_(world, total)
        losses.append(float(total[0]) / world.size)  # every rank of a replica reports its replica's loss
    mine = json.dumps(summary(pipe.named_parameters())).encode()
    parts = gather_bytes(world, mine)
    if world.rank == 0:
        params = {}
        for part in parts:
            params.update(json.loads(part))
        print(json.dumps({"losses": losses, "params": params, "balance": pipe.balance, "stats": pipe.stats()}))
