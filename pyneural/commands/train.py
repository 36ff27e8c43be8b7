"""``pyneural train``: train the MLP, the CNN or the small ResNet on the digits dataset (or on
MNIST / CIFAR-10 files, ``--data``) and report per-epoch loss, test accuracy and throughput, and at
the end where the time went (the utilization report).

The defaults (CNN, SGD with Nesterov momentum, cosine-annealed learning rate) reach ~98% test
accuracy in a few seconds on two cores. Flags are added in ``add_arguments`` and consumed in
``build``/``run``, which later options (distributed training, checkpoints, reports, devices) extend.

Checkpoints (``--checkpoint-dir``) hold everything a run depends on (model, optimizer, schedule,
random generators, the loader's position, the trainer's counters), so ``--resume`` continues a
killed run to the same bits as a run that was never interrupted, given the same flags and thread
count. Only rank 0 writes them; every rank reads the same file on resume, and the loader's
position is global, so a run may resume on another number of ranks.
"""
import argparse
import json
import os
import signal
import sys
import time

# Test hook: SIGKILL this process right after the checkpoint of this step is on disk, as a crash
# would, so a test can kill a run at a known point without racing it.
KILL_AFTER_SAVE_ENV = "PYNEURAL_TEST_KILL_AFTER_SAVE"

DEFAULT_LR = {"sgd": 0.05, "adam": 2e-3}
DEFAULT_KEEP = 3


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


def data_spec(text):
    """``digits``, ``mnist:DIR`` or ``cifar10:DIR`` -> ``(name, DIR or None)``."""
    name, colon, root = text.partition(":")
    if (name == "digits" and not colon) or (name in ("mnist", "cifar10") and root):
        return name, root or None
    raise argparse.ArgumentTypeError(f"expected digits, mnist:DIR or cifar10:DIR, got {text!r}")


def register(subparsers):
    parser = subparsers.add_parser("train", help="train a model on the digits dataset (or MNIST / CIFAR-10)",
                                   description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.set_defaults(handler=run, check=check_arguments)
    return parser


def check_arguments(parser, args):
    from pyneural.distributed import cli_support
    cli_support.check_arguments(parser, args)
    if args.checkpoint_dir is None:
        given = [flag for flag, value in (("--resume", args.resume), ("--resume-from", args.resume_from),
                                          ("--save-every", args.save_every),
                                          ("--keep", args.keep != DEFAULT_KEEP)) if value]
        if given:
            parser.error(f"{', '.join(given)} need(s) --checkpoint-dir DIR")
    if args.resume and args.resume_from:
        parser.error("--resume and --resume-from exclude each other: --resume takes the newest valid checkpoint "
                     "in --checkpoint-dir, --resume-from the file it names")


def add_arguments(parser):
    parser.add_argument("--model", choices=("mlp", "cnn", "resnet"), default="cnn",
                        help="architecture, sized for the data's images (default: cnn)")
    parser.add_argument("--data", type=data_spec, default="digits", metavar="{digits,mnist:DIR,cifar10:DIR}",
                        help="training and test images: scikit-learn's 8x8 digits (default), or MNIST's IDX files "
                             "(.gz or not) / CIFAR-10's python batches (cifar-10-batches-py) in DIR; nothing is "
                             "downloaded")
    parser.add_argument("--epochs", type=positive_int, default=12, help="passes over the training set (default: 12)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="batch size (default: 32)")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd",
                        help="sgd: Nesterov momentum 0.9; adam (default: sgd)")
    parser.add_argument("--lr", type=positive_float, default=None,
                        help=f"peak learning rate, cosine-annealed to 0 (default: "
                             f"{DEFAULT_LR['sgd']} for sgd, {DEFAULT_LR['adam']} for adam)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds initialisation, shuffling and augmentation (default: 0)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="where to train: cpu (default) or cuda (a GPU, or the emulated device with "
                             "PYNEURAL_CUDA_EMULATE=1)")
    parser.add_argument("--amp", choices=("bf16", "fp16"), default=None,
                        help="mixed precision: matmul and conv on bf16/fp16 operands with fp32 accumulation, fp32 "
                             "master weights (fp16 with dynamic loss scaling). Default: off (fp32)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--augment", action="store_true",
                        help="augment training images: random crop after zero padding (1 pixel for digits, 2 for "
                             "MNIST, 4 for CIFAR-10 with a random horizontal flip; no flip for digits: a mirrored "
                             "digit is another symbol, or none). Default: off")
    parser.add_argument("--workers", type=positive_int, default=1,
                        help="data-loader threads preparing batches ahead of the training step (default: 1)")
    group = parser.add_argument_group("checkpoints and reports")
    group.add_argument("--checkpoint-dir", metavar="DIR", default=None,
                       help="write checkpoints (ckpt-<step>.npz: tensors in .npz, metadata in JSON, checksummed, "
                            "written atomically) to DIR")
    group.add_argument("--save-every", type=positive_int, default=None, metavar="N",
                       help="checkpoint every N optimizer steps (default: once per epoch); one is always written "
                            "at the end")
    group.add_argument("--keep", type=positive_int, default=DEFAULT_KEEP, metavar="K",
                       help=f"keep the newest K checkpoints (default: {DEFAULT_KEEP})")
    group.add_argument("--resume", action="store_true",
                       help="continue from the newest valid checkpoint in --checkpoint-dir, skipping (and naming) "
                            "files that are not valid checkpoints; start afresh when there is none. The result is "
                            "bitwise that of an uninterrupted run")
    group.add_argument("--resume-from", metavar="PATH", default=None,
                       help="continue from the checkpoint file PATH (any directory); new checkpoints still go to "
                            "--checkpoint-dir")
    group.add_argument("--report", metavar="PATH", default=None,
                       help="also write the utilization report (printed at the end of every run) as JSON to PATH")
    group.add_argument("--step-log", metavar="PATH", default=None,
                       help="append one JSON line per optimizer step (step, epoch, loss) to PATH")
    from pyneural.distributed import cli_support
    cli_support.add_arguments(parser)


def build(args, world=None):
    """The model, optimizer, schedule and loaders that ``args`` describe. With ``world`` (a
    distributed run) the training set is sharded by a DistributedSampler and ``--batch-size`` is
    per rank; rank 0's initial parameters are broadcast later by the DDP wrapper."""
    import numpy as np

    import pyneural as pn
    from pyneural import optim
    from pyneural.data import DataLoader

    pn.manual_seed(args.seed)
    np.random.seed(args.seed)  # numpy's global generator too, for code that draws from it
    train_set, test_set = load_data(args.data)
    image_shape = train_set.arrays[0].shape[1:]
    transform = augmentation(args.data[0], image_shape) if args.augment else None
    # On a CUDA device the trainer's DevicePrefetcher copies batches from page-locked memory
    pin_memory = getattr(args, "device", "cpu") == "cuda"
    options = dict(batch_size=args.batch_size, transform=transform, workers=args.workers, pin_memory=pin_memory)
    if world is None:
        train_loader = DataLoader(train_set, shuffle=True, seed=args.seed, **options)
    else:
        from pyneural.distributed import DistributedSampler
        from pyneural.distributed.cli_support import data_parallel_rank
        replicas, replica = data_parallel_rank(args, world)
        sampler = DistributedSampler(train_set, num_replicas=replicas, rank=replica, seed=args.seed)
        train_loader = DataLoader(train_set, sampler=sampler, **options)
    test_loader = DataLoader(test_set, batch_size=512, pin_memory=pin_memory)
    model = build_model(args.model, image_shape)
    lr = args.lr if args.lr is not None else DEFAULT_LR[args.optimizer]
    if args.optimizer == "sgd":
        optimizer = optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=1e-4)
    else:
        optimizer = optim.Adam(model.parameters(), lr=lr)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * len(train_loader))
    return model, optimizer, scheduler, train_loader, test_loader


def load_data(spec):
    """``(train, test)`` TensorDatasets of ``--data``: images float32 (N, C, H, W) in [0, 1]."""
    from pyneural import datasets
    name, root = spec
    if name == "digits":
        return datasets.digits()
    reader = getattr(datasets, name)
    try:
        return reader(root, train=True), reader(root, train=False)
    except (OSError, ValueError) as e:
        raise SystemExit(f"pyneural train: --data {name}:{root}: {e}") from None


def augmentation(data_name, image_shape):
    """The batch augmentation of ``--augment`` for this data."""
    from pyneural.data.augment import Compose, RandomCrop, RandomHorizontalFlip
    if data_name == "cifar10":
        return Compose([RandomCrop(image_shape[-2:], padding=4), RandomHorizontalFlip()])
    return RandomCrop(image_shape[-2:], padding=2 if data_name == "mnist" else 1)


def build_model(name, image_shape):
    """``--model`` sized for images of ``image_shape`` (C, H, W), ten classes."""
    from pyneural import models
    channels, height, width = image_shape
    if name == "mlp":
        return models.mlp(in_features=channels * height * width)
    if name == "cnn":
        if height != width:
            raise SystemExit(f"pyneural train: --model cnn needs square images, got {height}x{width}")
        return models.cnn(in_channels=channels, image_size=height)
    return models.resnet_small(in_channels=channels)


class EpochPrinter:
    """Prints one line per epoch (through tqdm, so an active bar is not garbled)."""

    def __init__(self, epochs, write):
        self.epochs, self.write = epochs, write

    def on_epoch_end(self, trainer, stats):
        self.write(f"epoch {stats.epoch + 1:>3}/{self.epochs}  loss {stats.train_loss:.4f}  "
                   f"test loss {stats.test_loss:.4f}  test acc {100 * stats.test_accuracy:6.2f}%  "
                   f"{stats.images_per_s:9,.0f} img/s  ({stats.seconds:.2f} s, data wait {stats.data_wait_s:.3f} s)")


class StepLog:
    """Appends ``{"step", "epoch", "loss"}`` as a JSON line per optimizer step, flushed at once
    (the loss as Python's shortest exact repr, so two logs compare bit for bit)."""

    def __init__(self, path, loader):
        self.file = open(path, "a")
        self.loader = loader

    def on_step_end(self, trainer, loss):
        epoch = self.loader.last_delivered.epoch
        self.file.write(json.dumps({"step": trainer.global_step, "epoch": epoch, "loss": loss}) + "\n")
        self.file.flush()

    def on_train_end(self, trainer):
        self.file.close()


class KillAfterSave:
    """The crash of the kill-and-resume test: SIGKILL once the checkpoint of ``step`` is saved."""

    def __init__(self, saver, step):
        self.saver, self.step = saver, step

    def on_step_end(self, trainer, loss):
        if self.saver.last_saved_step == self.step == trainer.global_step:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_epoch_end(self, trainer, stats):
        self.on_step_end(trainer, None)


def setup_checkpoints(args, trainer, train_loader, main_rank, write):
    """The Checkpointer and, on rank 0, the saving callback (added to the trainer); with
    ``--resume`` restores the newest valid checkpoint, naming each newer file it skipped and why,
    with ``--resume-from`` the file given. Returns ``(saver, resumed_path)``."""
    from pyneural.checkpoint import (CheckpointError, Checkpointer, SaveEvery, check_training_state, load,
                                     restore_training_state)
    checkpointer = Checkpointer(args.checkpoint_dir, keep=args.keep)
    saver = None
    if main_rank:
        run_args = {k: v for k, v in vars(args).items() if isinstance(v, (int, float, str, bool, type(None)))}
        saver = SaveEvery(checkpointer, train_loader, every=args.save_every or len(train_loader),
                          extra={"args": run_args})
        trainer.callbacks.append(saver)
        kill_step = os.environ.get(KILL_AFTER_SAVE_ENV)
        if kill_step:
            trainer.callbacks.append(KillAfterSave(saver, int(kill_step)))
    if getattr(args, "resume_from", None):
        path = args.resume_from
        try:
            state = load(path)
        except (FileNotFoundError, CheckpointError) as e:
            raise SystemExit(f"pyneural train: cannot resume from {path}: {e}") from None
    elif args.resume:
        found = checkpointer.newest_valid(accept=check_training_state)
        for skipped, problem in found.skipped:
            write(f"skipped {skipped}: {problem}")
        if found.path is None:
            write(f"no {'valid ' if found.skipped else ''}checkpoint in {args.checkpoint_dir}: starting from scratch")
            return saver, None
        path, state = found.path, found.state
    else:
        return saver, None
    try:
        restore_training_state(state, trainer, train_loader)
    except (CheckpointError, RuntimeError, ValueError, KeyError) as e:
        raise SystemExit(f"pyneural train: cannot resume from {path}: {e}") from None
    if saver is not None:
        saver.last_saved_step = trainer.global_step
    loader = state["loader"]
    saved_ranks = loader.get("ranks", 1)
    ranks = f", written by {saved_ranks} rank(s)" if saved_ranks != getattr(train_loader.sampler, "num_replicas", 1) \
        else ""
    write(f"resumed from {path}: step {state['step']}, epoch {loader['epoch'] + 1}, sample "
          f"{loader['position']}/{loader['epoch_size']} of the epoch{ranks}")
    return saver, path


def run(args):
    start = time.perf_counter()
    if getattr(args, "device", "cpu") != "cpu":
        from pyneural import backend
        try:
            backend.for_device(args.device)
        except RuntimeError as e:
            print(f"pyneural train: {e}", file=sys.stderr)
            return 2
    from tqdm import tqdm

    from pyneural import report as reporting
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
    device = getattr(args, "device", "cpu")
    if device == "cuda":
        device = f"cuda:{getattr(args, 'device_index', 0)}"  # a distributed run's rank has its own GPU
    model.to(device)  # the optimizer's Parameters are the same objects, now on the device
    printer = EpochPrinter(args.epochs, write)
    callbacks = [printer]
    if args.step_log and main_rank:
        callbacks.append(StepLog(args.step_log, train_loader))
    if world is None:
        trainer = Trainer(model, optimizer, scheduler=scheduler, scheduler_interval="step", callbacks=callbacks,
                          device=device, amp=getattr(args, "amp", None))
    else:
        trainer, ddp = cli_support.make_trainer(args, model, optimizer, scheduler, timeline, scheduler_interval="step",
                                                callbacks=callbacks, device=device, amp=getattr(args, "amp", None))
    if world is None:
        ranks = ""
    else:
        stages = getattr(args, "pipeline_stages", 1)
        layout = f", {stages} pipeline stages x {world.size // stages} replicas" if stages > 1 else ""
        ranks = f" on {world.size} ranks{layout} (global batch {args.batch_size * world.size // stages})"
    data_name = args.data[0]
    write(f"training {args.model} on {data_name} ({len(train_loader.dataset)} train / {len(test_loader.dataset)} "
          f"test images), {args.optimizer}, lr {optimizer.param_groups[0]['lr']}, batch {args.batch_size}"
          f"{ranks}, {args.epochs} epochs" + ("" if device == "cpu" else f", on {device.split(':')[0]}")
          + (f", autocast {args.amp}" if getattr(args, "amp", None) else ""))
    inputs, targets = train_loader.dataset.get_batch(range(min(args.batch_size, len(train_loader.dataset))))
    import pyneural as pn
    flops = reporting.count_flops(model, trainer.loss_fn, pn.Tensor(inputs).to(device), pn.Tensor(targets).to(device))
    saver = resumed = None
    if args.checkpoint_dir:
        saver, resumed = setup_checkpoints(args, trainer, train_loader, main_rank, write)

    def progress(batches, total):
        return tqdm(batches, total=total, desc=f"epoch {train_loader.epoch + 1}/{args.epochs}", unit="batch",
                    leave=False, disable=True if args.no_progress or not main_rank else None)

    sampler = _start_nvml(device)
    train_start = time.perf_counter()
    run_epochs = trainer.fit(train_loader, args.epochs, eval_loader=test_loader, progress=progress)
    wall = time.perf_counter() - train_start
    gpu = sampler.stop() if sampler is not None else None
    comm = None
    if world is not None:
        comm = cli_support.finish(args, ddp, timeline, write)
    train_seconds = sum(s.seconds for s in run_epochs)
    images = sum(s.images_per_s * s.seconds for s in run_epochs)
    throughput = f" ({images / train_seconds:,.0f} img/s)" if train_seconds > 0 else ""
    history = trainer.history
    write(f"final test accuracy {100 * history[-1].test_accuracy:.2f}% after {args.epochs} epochs; "
          f"training {train_seconds:.2f} s{throughput}, total {time.perf_counter() - start:.2f} s")
    if main_rank:
        report = build_report(args, trainer, train_loader, flops, wall, comm, world, saver, resumed, reporting, gpu)
        write(report.format())
        if args.report:
            report.write_json(args.report)
            write(f"wrote report {args.report}")
    return 0


def _start_nvml(device):
    """GPU utilization and memory sampled through NVML during training, on a real GPU where
    nvidia-ml-py is installed (else None: the report then goes without them)."""
    from pyneural.cuda import emulator
    if device == "cpu" or emulator.enabled():
        return None
    from pyneural import cuda
    from pyneural.report import NvmlSampler
    try:
        return NvmlSampler(device_index=cuda.current_device()).start()
    except Exception:  # no nvidia-ml-py, or NVML refuses (containers without the library)
        return None


def build_report(args, trainer, train_loader, flops, wall, comm, world, saver, resumed, reporting, gpu=None):
    """The utilization report of this process's training (rank 0's, in a distributed run)."""
    comm_wait = comm["exposed_ms"] * comm["steps"] / 1e3 if comm and "exposed_ms" in comm else 0.0
    details = {"model": args.model, "data": ":".join(d for d in args.data if d), "batch_size": args.batch_size,
               "epochs": args.epochs,
               "global_step": trainer.global_step,
               "eval_s": trainer.eval_time, "checkpoint_s": saver.seconds if saver is not None else 0.0,
               "peak_method": ("pyneural float32 GEMM" if args.device == "cpu" else "float32 cupy matmul (cuBLAS)")
                              + " 1024^3, best of 5",
               "flops": flops, "distributed": world is not None, "ranks": world.size if world else 1,
               "loader": {"prefetch": train_loader.prefetch, "workers": args.workers, "augment": args.augment},
               "threads": os.environ.get("OMP_NUM_THREADS"), "resumed_from": resumed,
               "final_test_accuracy": trainer.history[-1].test_accuracy}
    if comm:
        details["communication"] = comm
    return reporting.build_report(wall_s=wall, compute_s=trainer.compute_time, data_wait_s=trainer.data_wait_time,
                                  comm_wait_s=comm_wait, steps=trainer.steps_run, samples=trainer.samples_trained,
                                  flops_per_sample=flops["train_per_sample"],
                                  peak_gflops=reporting.measured_peak_gflops(args.device), device=args.device,
                                  details=details, gpu=gpu)
