"""``pyneural recsys``: train a rating model (biased matrix factorisation or NCF) on MovieLens ratings
or on synthetic ratings with ML-25M's shape, and print train/test RMSE and seconds per epoch.

    pyneural recsys --ratings ml-25m/ratings.csv --epochs 10
    pyneural recsys --synthetic 24000000 --factors 32 --batch-size 131072
    pyneural recsys --synthetic 24000000 --device cuda
    mpirun -np 2 pyneural recsys --synthetic 1000000 --distributed

Embedding tables get row-sparse gradients; the optimizer updates only the touched rows. With
``--distributed`` each rank trains on its own contiguous 1/N of the (shuffled) training ratings with
``--batch-size`` per rank; embedding gradients are exchanged as touched rows (allgather), dense ones
all-reduced (pyneural/distributed/sparse.py). With ``--device cuda`` the model and the ratings are
moved to the GPU (or the emulated device, PYNEURAL_CUDA_EMULATE=1) once and every step runs there.
Synthetic runs also print the noise floor (the RMSE of the true scores), the best any model can do
on average.
"""
import json
import sys
import time

from pyneural.commands.train import positive_float, positive_int

DEFAULTS = {"sgd": dict(lr=0.5), "adam": dict(lr=0.02)}


def register(subparsers):
    parser = subparsers.add_parser("recsys", help="train a recommender (matrix factorisation / NCF) on ratings",
                                   description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--ratings", metavar="FILE", help="MovieLens u.data, ratings.dat or ratings.csv")
    source.add_argument("--synthetic", metavar="N", type=positive_int, help="N synthetic ratings (ML-25M's shape)")
    parser.add_argument("--model", choices=("mf", "ncf"), default="mf")
    parser.add_argument("--epochs", type=positive_int, default=10)
    parser.add_argument("--factors", type=positive_int, default=8, help="embedding dimension")
    parser.add_argument("--optimizer", choices=("adam", "sgd"), default="adam",
                        help="row-sparse Adam (lazy, like SparseAdam) or SGD")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help="initial learning rate, cosine-annealed to 0 over the epochs (default: adam 0.02, sgd 0.5). Adam is the better choice here: with "
                             "a batch-mean loss a row's gradient is ~1/batch of the global bias's, which one SGD "
                             "rate cannot serve both")
    parser.add_argument("--l2", type=float, default=0.0, help="per-rating L2 regularisation (mf)")
    parser.add_argument("--prior", type=float, default=2.0,
                        help="per-row Gaussian prior (mf): (SSE + prior * sum |row|^2) / N; tuned on synthetic data")
    parser.add_argument("--batch-size", type=positive_int, default=65536)
    parser.add_argument("--test-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where to train: cpu (default) or cuda (a GPU, or the emulated device with "
                             "PYNEURAL_CUDA_EMULATE=1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", metavar="PATH", help="write the per-epoch records and the summary as JSON")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel over the processes mpirun started (row-sparse gradient exchange)")
    parser.set_defaults(handler=run)
    return parser


def _load(args):
    from pyneural.recsys import data
    if args.ratings is not None:
        ratings = data.read_ratings(args.ratings)
        return ratings, data.train_test_split(ratings, args.test_fraction, seed=args.seed)
    ratings = data.synthetic(args.synthetic, seed=args.seed)
    return ratings, data.train_test_split(ratings, args.test_fraction, shuffled=True)


def build_model(args, n_users, n_items):
    from pyneural.recsys.models import NCF, MatrixFactorization
    if args.model == "mf":
        return MatrixFactorization(n_users, n_items, args.factors, l2=args.l2, prior=args.prior)
    return NCF(n_users, n_items, args.factors)


def build_optimizer(args, model):
    import pyneural as pn
    lr = args.lr if args.lr is not None else DEFAULTS[args.optimizer]["lr"]
    if args.optimizer == "adam":
        return pn.optim.Adam(model.parameters(), lr=lr)
    return pn.optim.SGD(model.parameters(), lr=lr)


def run(args):
    import pyneural as pn
    from pyneural.recsys.train import evaluate, fit

    if not 0 < args.test_fraction < 1:
        print(f"pyneural recsys: --test-fraction must lie in (0, 1), got {args.test_fraction}", file=sys.stderr)
        return 2
    if args.l2 < 0 or args.prior < 0:
        print(f"pyneural recsys: --l2 and --prior must be >= 0, got {args.l2}, {args.prior}", file=sys.stderr)
        return 2
    if args.device != "cpu":
        if args.distributed:
            print("pyneural recsys: --distributed trains on the CPU only (the row-sparse gradient exchange is "
                  "host code); drop --device cuda", file=sys.stderr)
            return 2
        from pyneural import backend
        try:
            backend.for_device(args.device)
        except RuntimeError as e:
            print(f"pyneural recsys: {e}", file=sys.stderr)
            return 2
    world, sync = None, None
    if args.distributed:
        import pyneural.distributed as dist
        world = dist.init()
    main = world is None or world.is_main
    say = print if main else (lambda *a, **k: None)

    start = time.perf_counter()
    try:
        ratings, (train, test) = _load(args)
    except (OSError, ValueError) as e:
        print(f"pyneural recsys: {e}", file=sys.stderr)
        return 1
    say(f"{ratings}: {len(train)} train / {len(test)} test, loaded in {time.perf_counter() - start:.1f} s")
    floor = test.noise_floor()
    if floor is not None:
        say(f"noise floor (test RMSE of the true scores): {floor:.4f}")

    pn.manual_seed(args.seed)
    model = build_model(args, ratings.n_users, ratings.n_items).to(args.device)
    optimizer = build_optimizer(args, model)
    train, test = train.to(args.device), test.to(args.device)  # once: a step then slices device columns
    if args.device != "cpu":
        say(f"training on {args.device}")
    shard = train
    if world is not None:
        from pyneural.distributed.sparse import SparseGradSync
        sync = SparseGradSync(model, world)
        per_rank = len(train) // world.size  # equal shards: every rank takes the same number of steps
        shard = train.subset(slice(world.rank * per_rank, (world.rank + 1) * per_rank))
        say(f"distributed: {world.size} ranks, {per_rank} ratings and batch {args.batch_size} each")

    def log(record):
        floor_text = "" if floor is None else f" ({record['test_rmse'] / floor:.3f} x floor)"
        say(f"epoch {record['epoch']:3d}  train loss {record['train_loss']:.4f}  test RMSE "
            f"{record['test_rmse']:.4f}{floor_text}  {record['seconds']:.2f} s/epoch  "
            f"{len(shard) / record['seconds'] / 1e6:.2f} M ratings/s")

    history = fit(model, optimizer, shard, test, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                  sync=sync, progress=main and not args.no_progress, log=log)
    train_rmse = evaluate(model, train)
    summary = {"train_rmse": train_rmse, "test_rmse": history[-1]["test_rmse"], "noise_floor": floor,
               "seconds_per_epoch": sum(r["seconds"] for r in history) / len(history)}
    say(f"train RMSE {train_rmse:.4f}  test RMSE {summary['test_rmse']:.4f}  "
        f"{summary['seconds_per_epoch']:.2f} s/epoch (mean)")
    if args.json and main:
        with open(args.json, "w") as f:
            json.dump({"epochs": history, "summary": summary}, f, indent=2)
    return 0
