"""Recommender benchmark: biased matrix factorisation on synthetic ML-25M-shaped ratings.

For each size (default 1M and 24M ratings) one child process generates the data, trains
``--epochs`` epochs (row-sparse Adam, ``nn.Embedding(sparse=True)`` tables) and reports seconds per
epoch (best and mean), ratings/s, the final test RMSE, the noise floor (test RMSE of the true
scores) and the child's peak resident memory (ru_maxrss, so data generation counts too; taken
before the torch reference runs, torch itself is not imported until then). Each size runs in its
own process so peak memory is per run.

Reference, in the same run: the same model (nn.Embedding(sparse=True) tables, SparseAdam for them,
Adam for the global bias, the same batch size and batch order) in PyTorch, timed for
``--torch-epochs`` epochs (0 to skip; only up to ``--torch-max`` ratings) in the same child on the
same data. ``ratio`` = ours / torch
seconds per epoch. GPU rows (pyneural on CuPy) are added when a GPU and CuPy are present.

    flock /work/notes/bench.lock python bench/recsys.py --sizes 1000000 24000000 --json r.json
"""
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import common  # noqa: E402


def _torch_epoch_seconds(train, args, epochs):
    """Seconds per epoch (best) of the same MF in PyTorch (CPU), or None without torch."""
    try:
        import torch
    except ImportError:
        return None
    import numpy as np
    torch.manual_seed(0)
    nu, ni, k = train.n_users, train.n_items, args.factors

    class MF(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.P, self.Q = torch.nn.Embedding(nu, k, sparse=True), torch.nn.Embedding(ni, k, sparse=True)
            self.bu, self.bi = torch.nn.Embedding(nu, 1, sparse=True), torch.nn.Embedding(ni, 1, sparse=True)
            for e in (self.P, self.Q):
                torch.nn.init.normal_(e.weight, 0, 0.05)
            for e in (self.bu, self.bi):
                torch.nn.init.zeros_(e.weight)
            self.mu = torch.nn.Parameter(torch.tensor([3.5]))

        def forward(self, u, i):
            p, q = self.P(u), self.Q(i)
            score = (p * q).sum(1) + self.bu(u)[:, 0] + self.bi(i)[:, 0] + self.mu
            penalty = (p * p).sum(1) + (q * q).sum(1) + self.bu(u)[:, 0] ** 2 + self.bi(i)[:, 0] ** 2
            return score, penalty

    model = MF()
    sparse = [model.P.weight, model.Q.weight, model.bu.weight, model.bi.weight]
    opts = [torch.optim.SparseAdam(sparse, lr=args.lr), torch.optim.Adam([model.mu], lr=args.lr)]
    users, items = torch.from_numpy(train.users.astype(np.int64)), torch.from_numpy(train.items.astype(np.int64))
    ratings = torch.from_numpy(train.ratings)
    rng = np.random.default_rng(0)
    best = float("inf")
    for _ in range(epochs):
        starts = np.arange(0, len(train), args.batch_size)
        rng.shuffle(starts)
        t0 = time.perf_counter()
        for s in starts:
            e = min(s + args.batch_size, len(train))
            score, penalty = model(users[s:e], items[s:e])
            loss = ((score - ratings[s:e]) ** 2).mean() + args.l2 * penalty.mean()
            for o in opts:
                o.zero_grad()
            loss.backward()
            for o in opts:
                o.step()
        best = min(best, time.perf_counter() - t0)
    return best


def worker(args):
    """Runs in the child: one size, one device. Prints one JSON line."""
    import resource

    import numpy as np

    import pyneural as pn
    from pyneural.recsys import MatrixFactorization, evaluate, fit, synthetic, train_test_split

    t0 = time.perf_counter()
    data = synthetic(args.worker, seed=0)
    train, test = train_test_split(data, shuffled=True)
    gen_s = time.perf_counter() - t0
    pn.manual_seed(0)
    model = MatrixFactorization(data.n_users, data.n_items, args.factors, l2=args.l2, prior=args.prior)
    if args.device == "cuda":
        model.to("cuda")
    opt = pn.optim.Adam(model.parameters(), lr=args.lr)
    history = fit(model, opt, train, None, epochs=args.epochs, batch_size=args.batch_size, seed=0)
    secs = [r["seconds"] for r in history]
    test_rmse = evaluate(model, test)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB, before torch runs
    torch_s = _torch_epoch_seconds(train, args, args.torch_epochs) if args.torch_epochs and args.device == "cpu" \
        else None
    print(json.dumps({"ratings": args.worker, "device": args.device, "train": len(train), "gen_s": gen_s,
                      "epoch_s": min(secs), "mean_epoch_s": float(np.mean(secs)),
                      "ratings_per_s": len(train) / min(secs), "test_rmse": test_rmse,
                      "noise_floor": test.noise_floor(), "rmse_vs_floor": test_rmse / test.noise_floor(),
                      "peak_gib": peak, "torch_epoch_s": torch_s,
                      "ratio": None if torch_s is None else min(secs) / torch_s}))


def gpu_available():
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device
        return False


def main():
    p = common.parser(__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 24_000_000])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--torch-epochs", type=int, default=1)
    p.add_argument("--torch-max", type=int, default=2_000_000,
                   help="time the torch reference only up to this many ratings (it runs ~10x slower)")
    p.add_argument("--factors", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=131072)
    p.add_argument("--lr", type=float, default=0.02, help="initial rate, cosine-annealed to 0 over the epochs")
    p.add_argument("--l2", type=float, default=0.0, help="per-rating L2")
    p.add_argument("--prior", type=float, default=2.0, help="per-row Gaussian prior (MatrixFactorization prior)")
    p.add_argument("--worker", type=int, help=argparse_suppress())
    p.add_argument("--device", default="cpu", help=argparse_suppress())
    args = p.parse_args()
    if args.worker:
        return worker(args)
    devices = ["cpu"] + (["cuda"] if gpu_available() else [])
    rows = []
    for n in args.sizes:
        for device in devices:
            cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(n), "--device", device,
                   "--epochs", str(args.epochs), "--torch-epochs",
                   str(args.torch_epochs if n <= args.torch_max else 0), "--factors",
                   str(args.factors), "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--l2", str(args.l2),
                   "--prior", str(args.prior)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"{device} {n}: failed\n{out.stderr[-3000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    columns = [("ratings", "ratings", "{:,}"), ("device", "device", "{}"), ("epoch_s", "s/epoch (best)", "{:.2f}"),
               ("mean_epoch_s", "s/epoch (mean)", "{:.2f}"), ("ratings_per_s", "ratings/s", "{:,.0f}"),
               ("test_rmse", "test RMSE", "{:.4f}"), ("noise_floor", "noise floor", "{:.4f}"),
               ("rmse_vs_floor", "RMSE/floor", "{:.3f}"), ("peak_gib", "peak GiB", "{:.2f}"),
               ("gen_s", "generate s", "{:.1f}"), ("torch_epoch_s", "torch s/epoch", "{:.2f}"),
               ("ratio", "ratio", "{:.2f}")]
    title = (f"Biased MF, {args.factors} factors, batch {args.batch_size}, sparse Adam lr {args.lr} cosine, l2 {args.l2}, "
             f"prior {args.prior}, "
             f"{args.epochs} epochs, {os.cpu_count()} CPUs (ratio = ours / torch s/epoch)")

    def plot(rows, ax):
        for device in sorted({r["device"] for r in rows}):
            sel = [r for r in rows if r["device"] == device]
            ax.plot([r["ratings"] for r in sel], [r["epoch_s"] for r in sel], "o-", label=f"pyneural {device}")
        sel = [r for r in rows if r.get("torch_epoch_s")]
        ax.plot([r["ratings"] for r in sel], [r["torch_epoch_s"] for r in sel], "s--", label="torch cpu")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("ratings")
        ax.set_ylabel("seconds per epoch")
        ax.legend()

    common.report(rows, columns, args, title, plot=plot)


def argparse_suppress():
    import argparse
    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
