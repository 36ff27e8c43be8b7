"""``pyneural train``: train the MLP or the CNN on the digits dataset and report per-epoch loss,
test accuracy and throughput.

The defaults (CNN, SGD with Nesterov momentum, cosine-annealed learning rate) reach ~98% test
accuracy in a few seconds on two cores. Flags are added in ``add_arguments`` and consumed in
``build``/``run``, which later options (distributed training, checkpoints, reports, devices) extend.
"""
import argparse
import sys
import time

DEFAULT_LR = {"sgd": 0.05, "adam": 2e-3}


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def register(subparsers):
    parser = subparsers.add_parser("train", help="train a model on the digits dataset",
                                   description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.set_defaults(handler=run, check=check_arguments)
    return parser


def check_arguments(parser, args):
    from pyneural.distributed import cli_support
    cli_support.check_arguments(parser, args)


def add_arguments(parser):
    parser.add_argument("--model", choices=("mlp", "cnn"), default="cnn", help="architecture (default: cnn)")
    parser.add_argument("--epochs", type=positive_int, default=12, help="passes over the training set (default: 12)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default: 32)")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                        help="sgd: Nesterov momentum 0.9; adam (default: sgd)")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help=f"peak learning rate, cosine-annealed to 0 (default: "
                             f"{DEFAULT_LR['sgd']} for sgd, {DEFAULT_LR['adam']} for adam)")
    parser.add_argument("--seed", type=int, default=0, help="seeds initialisation and shuffling (default: 0)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    from pyneural.distributed import cli_support
    cli_support.add_arguments(parser)


def build(args, world=None):
    """The model, optimizer, schedule and loaders that ``args`` describe. With ``world`` (a
    distributed run) the training set is sharded by a DistributedSampler and ``--batch-size`` is
    per rank; rank 0's initial parameters are broadcast later by the DDP wrapper."""
    import pyneural as pn
    from pyneural import models, optim
    from pyneural.data import DataLoader
    from pyneural.datasets import digits

    pn.manual_seed(args.seed)
    train_set, test_set = digits()
    if world is None:
        train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, seed=args.seed)
    else:
        from pyneural.distributed import DistributedSampler
        sampler = DistributedSampler(train_set, num_replicas=world.size, rank=world.rank, seed=args.seed)
        train_loader = DataLoader(train_set, batch_size=args.batch_size, sampler=sampler)
    test_loader = DataLoader(test_set, batch_size=512)
    model = models.MODELS[args.model]()
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    if args.optimizer == "sgd":
        optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
    else:
        optimizer = optim.Adam(model.parameters(), lr=lr)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * len(train_loader))
    return model, optimizer, scheduler, train_loader, test_loader


class EpochPrinter:
    """Prints one line per epoch (through tqdm, so an active bar is not garbled)."""

    def __init__(self, epochs, write):
        self.epochs, self.write = epochs, write

    def on_epoch_end(self, trainer, stats):
        self.write(f"epoch {stats.epoch + 1:>3}/{self.epochs}  loss {stats.train_loss:.4f}  "
                   f"test loss {stats.test_loss:.4f}  test acc {100 * stats.test_accuracy:6.2f}%  "
                   f"{stats.images_per_s:9,.0f} img/s  ({stats.seconds:.2f} s, data wait {stats.data_wait_s:.3f} s)")


def run(args):
    start = time.perf_counter()
    from tqdm import tqdm

    from pyneural.trainer import Trainer

    world = timeline = None
    if args.distributed:
        from pyneural.distributed import cli_support
        world, timeline = cli_support.setup(args)
    main_rank = world is None or world.rank == 0

    def write(line):
        if main_rank:
            tqdm.write(line, file=sys.stdout)

    model, optimizer, scheduler, train_loader, test_loader = build(args, world)
    printer = EpochPrinter(args.epochs, write)
    if world is None:
        trainer = Trainer(model, optimizer, scheduler=scheduler, scheduler_interval="step", callbacks=[printer])
    else:
        from pyneural.distributed.training import DistributedTrainer
        ddp = cli_support.wrap_model(args, model, timeline)
        trainer = DistributedTrainer(ddp, optimizer, scheduler=scheduler, scheduler_interval="step",
                                     callbacks=[printer])
    ranks = f" on {world.size} ranks (global batch {args.batch_size * world.size})" if world else ""
    write(f"training {args.model} on digits ({len(train_loader.dataset)} train / {len(test_loader.dataset)} "
          f"test images), {args.optimizer}, lr {optimizer.param_groups[0]['lr']}, batch {args.batch_size}"
          f"{ranks}, {args.epochs} epochs")

    def progress(batches, total):
        return tqdm(batches, total=total, desc=f"epoch {train_loader.epoch + 1}/{args.epochs}", unit="batch",
                    leave=False, disable=True if args.no_progress or not main_rank else None)

    history = trainer.fit(train_loader, args.epochs, eval_loader=test_loader, progress=progress)
    train_seconds = sum(s.seconds for s in history)
    images = sum(s.images_per_s * s.seconds for s in history)
    if world is not None:
        cli_support.finish(args, ddp, timeline, write)
    write(f"final test accuracy {100 * history[-1].test_accuracy:.2f}% after {args.epochs} epochs; "
          f"training {train_seconds:.2f} s ({images / train_seconds:,.0f} img/s), "
          f"total {time.perf_counter() - start:.2f} s")
    return 0
