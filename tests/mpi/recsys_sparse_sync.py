"""Launched by tests/test_recsys.py under ``mpirun -np 2``: matrix factorisation trained on each
rank's shard with row-sparse gradients synced by SparseGradSync. Rank 0 prints one JSON line:
whether both ranks end with bitwise identical parameters, whether the first synced gradient equals
the all-reduced dense gradient, and the test RMSE before and after."""
import json

import numpy as np

import pyneural as pn
import pyneural.distributed as dist
from pyneural.distributed import collectives
from pyneural.distributed.sparse import SparseGradSync
from pyneural.functions.embedding import RowSparseGrad
from pyneural.functions.loss import mse_loss
from pyneural.recsys import MatrixFactorization, NCF, evaluate, synthetic, train_test_split
from pyneural.tensor import wrap

world = dist.init(timeout=60)
data = synthetic(40000, seed=1)
train, test = train_test_split(data, shuffled=True)
per_rank = len(train) // world.size
shard = train.subset(slice(world.rank * per_rank, (world.rank + 1) * per_rank))
result = {}
for name, model in (("mf", MatrixFactorization(data.n_users, data.n_items, 8, l2=0.03)),
                    ("ncf", NCF(data.n_users, data.n_items, 8, hidden=(16,)))):
    pn.manual_seed(world.rank)  # different initial weights per rank: the sync must broadcast rank 0's
    sync = SparseGradSync(model, world)
    opt = pn.optim.Adam(model.parameters(), lr=0.01)
    before = evaluate(model, test)
    grads_match = None
    for step in range(12):
        s = (step * 2048) % (per_rank - 2048)
        u, i = shard.users[s:s + 2048].astype(np.int64), shard.items[s:s + 2048].astype(np.int64)
        opt.zero_grad()
        mse_loss(model(u, i), wrap(shard.ratings[s:s + 2048])).backward()
        if step == 0:
            dense = [p.grad.to_dense() if isinstance(p.grad, RowSparseGrad) else p.grad.data.copy()
                     for p in model.parameters()]
            for d in dense:
                collectives.allreduce_(world, d)
                d /= world.size
        sync(model)
        if step == 0:
            synced = [p.grad.to_dense() if isinstance(p.grad, RowSparseGrad) else p.grad.data
                      for p in model.parameters()]
            kinds = [isinstance(p.grad, RowSparseGrad) for p in model.parameters()]
            grads_match = all(np.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(dense, synced))
        opt.step()
    flat = np.concatenate([p.data.reshape(-1) for p in model.parameters()])
    every = collectives.allgather(world, flat)
    result[name] = {"identical": bool(np.array_equal(every[0], every[1])), "grads_match": grads_match,
                    "sparse_params": int(sum(kinds)), "before": before, "after": evaluate(model, test),
                    "rows_moved": sync.rows_moved}
if world.rank == 0:
    print(json.dumps(result))
