"""ZeRO-1 (sharded optimizer state) training on digits, for tests/test_pipeline.py.

    mpirun -np N python zero_train.py --steps 4 [--deterministic] [--save-at 2 --ckpt F] [--load F]
    python zero_train.py --reference --ranks N --steps 4      # one process, the same global batches

Each rank trains on its slice of a global batch of N * --batch rows. Rank 0 prints one JSON line:
losses, final parameter sums, and the optimizer-state bytes per rank. ``--save-at K --ckpt F``
writes the consolidated optimizer state and parameters after step K; ``--load F`` starts from such
a file at step K (possibly written on another rank count). The reference accumulates the ranks'
gradients in rank order, as deterministic mode does.
"""
import argparse
import json

import numpy as np

import pyneural as pn
from pyneural import models
from pyneural.datasets import digits

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=4)
p.add_argument("--batch", type=int, default=24)
p.add_argument("--ranks", type=int, default=1, help="(reference) ranks to replay")
p.add_argument("--deterministic", action="store_true")
p.add_argument("--reference", action="store_true")
p.add_argument("--save-at", type=int, default=None)
p.add_argument("--ckpt", default=None)
p.add_argument("--load", default=None)
args = p.parse_args()

pn.manual_seed(0)
model = models.mlp()
train, _ = digits()
x_all, y_all = train.arrays
OPT = dict(lr=1e-3, weight_decay=0.01)


def batch(step, rank, ranks):
    start = step * args.batch * ranks + rank * args.batch
    return pn.tensor(x_all[start:start + args.batch]), pn.tensor(y_all[start:start + args.batch])


def grads_of(rank, ranks, step):
    for q in model.parameters():
        q.grad = None
    x, y = batch(step, rank, ranks)
    loss = pn.functional.cross_entropy(model(x), y)
    loss.backward()
    return loss.item(), [q.grad.numpy().copy() for q in model.parameters()]


def save(path, opt_state):
    arrays = {f"param/{i}": q.detach().numpy() for i, q in enumerate(model.parameters())}
    meta = {"param_groups": opt_state["param_groups"], "scalars": {}}
    for i, st in opt_state["state"].items():
        for k, v in st.items():
            if isinstance(v, np.ndarray):
                arrays[f"state/{i}/{k}"] = v
            else:
                meta["scalars"][f"{i}/{k}"] = v
    np.savez(path, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8), **arrays)


def load(path):
    z = np.load(path)
    meta = json.loads(z["meta"].tobytes())
    for i, q in enumerate(model.parameters()):
        q.data[...] = z[f"param/{i}"]
    state = {}
    for key in z.files:
        if key.startswith("state/"):
            _, i, k = key.split("/")
            state.setdefault(int(i), {})[k] = z[key]
    for key, v in meta["scalars"].items():
        i, k = key.split("/")
        state.setdefault(int(i), {})[k] = v
    return {"state": state, "param_groups": meta["param_groups"]}


def summary():
    return [float(np.asarray(q.detach().numpy(), np.float64).sum()) for q in model.parameters()]


first = 0
if args.reference:
    opt = pn.optim.AdamW(model.parameters(), **OPT)
    if args.load:
        opt.load_state_dict(load(args.load))
        first = args.save_at
    losses = []
    for step in range(first, args.steps):
        total, loss_sum = None, 0.0
        for r in range(args.ranks):
            loss, g = grads_of(r, args.ranks, step)
            loss_sum += loss
            total = g if total is None else [t + a for t, a in zip(total, g)]
        for q, t in zip(model.parameters(), total):
            q.grad = pn.tensor(t / args.ranks)
        opt.step()
        losses.append(loss_sum / args.ranks)
    print(json.dumps({"losses": losses, "params": summary()}))
else:
    import pyneural.distributed as dist
    from pyneural.distributed.collectives import allgather, allreduce_
    world = dist.init(timeout=60)
    dist.broadcast_parameters(world, model)
    opt = dist.ZeroRedundancyOptimizer(model.parameters(), pn.optim.AdamW, deterministic=args.deterministic, **OPT)
    if args.load:
        opt.load_state_dict(load(args.load))
        first = args.save_at
    losses = []
    for step in range(first, args.steps):
        x, y = batch(step, world.rank, world.size)
        opt.zero_grad()
        loss = pn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        total = np.array([loss.item()])
        allreduce_(world, total)
        losses.append(float(total[0]) / world.size)
        if args.save_at is not None and step + 1 == args.save_at and not args.load:
            state = opt.state_dict()  # collective
            if world.rank == 0:
                save(args.ckpt, state)
    nbytes = allgather(world, np.array([opt.state_nbytes()], np.int64))[:, 0].tolist()
    if world.rank == 0:
        print(json.dumps({"losses": losses, "params": summary(), "state_bytes": nbytes}))
