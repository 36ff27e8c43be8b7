"""The distributed side of ``pyneural train``: its flags, and the objects they ask for.

``add_arguments`` adds the flags to the train command's parser; ``setup`` turns the parsed
flags into the world, the sampler for the training set and the DDP-wrapped model. The train
command stays in charge of everything else (model choice, optimizer, printing), and asks
``is_main()`` before printing or writing.
"""
import argparse

from .comm import DEFAULT_TIMEOUT


def _positive_float(text):
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def add_arguments(parser):
    group = parser.add_argument_group(
        "distributed training", "run as 'mpirun -np N pyneural train --distributed ...': --batch-size is per "
                                "process, so the global batch is N times it")
    group.add_argument("--distributed", action="store_true",
                       help="data-parallel training over the processes mpirun started (MPI, mpi4py)")
    group.add_argument("--deterministic", action="store_true",
                       help="deterministic kernels and reductions. One process on the CPU is bitwise reproducible "
                            "already (the same bits every run with the same thread count), so this changes nothing "
                            "there; with --distributed, gradients are reduced by allgather and a sum in rank order: "
                            "bitwise equal to one process accumulating the N micro-batches")
    group.add_argument("--bucket-cap-mb", type=_positive_float, default=25.0, metavar="MB",
                       help="gradient bucket size in MiB (default: 25)")
    group.add_argument("--compress", choices=("bf16",), default=None,
                       help="send gradients as bfloat16 (half the bytes, ~3 significant digits)")
    group.add_argument("--timeout", type=_positive_float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                       help=f"abort the job when a collective takes longer (default: {DEFAULT_TIMEOUT:g})")
    group.add_argument("--trace", metavar="PATH", default=None,
                       help="write a Chrome trace (chrome://tracing, ui.perfetto.dev) of every rank's steps")


DISTRIBUTED_ONLY = ("compress", "trace")  # --deterministic also means something for one process


def check_arguments(parser, args):
    """Reject the options that mean nothing without --distributed (parser.error exits)."""
    if args.distributed:
        return
    given = [name for name in DISTRIBUTED_ONLY if getattr(args, name)]
    if given:
        flags = ", ".join("--" + name for name in given)
        parser.error(f"{flags} only apply to --distributed training (one process: "
                     f"'pyneural train --distributed ...' also runs without mpirun)")


def setup(args):
    """``(world, timeline)`` for a distributed run; call before building the model."""
    from . import init
    from .timeline import Timeline
    world = init(timeout=args.timeout)
    if getattr(args, "device", "cpu") == "cuda":  # one GPU per local rank (round robin past the count)
        from pyneural import cuda
        index = world.local_rank % max(cuda.device_count(), 1)
        from pyneural.cuda import _backend
        _backend.cupy().cuda.Device(index).use()
        args.device_index = index
    timeline = Timeline(world, enabled=args.trace is not None)
    timeline.start()
    return world, timeline


def wrap_model(args, model, timeline):
    """The DDP wrapper the flags describe (checks and broadcasts rank 0's parameters)."""
    from .ddp import DistributedDataParallel
    return DistributedDataParallel(model, bucket_cap_mb=args.bucket_cap_mb, compress=args.compress,
                                   deterministic=args.deterministic, timeline=timeline)


def finish(args, ddp, timeline, write):
    """After training (collective): the communication summary, printed through ``write`` on
    rank 0, and the trace file when asked for. Returns the summary."""
    from .ddp import format_comm_summary
    summary = ddp.comm_summary()
    if ddp.world.rank == 0:
        write(f"{ddp.world.size} ranks, {format_comm_summary(summary)}")
    if args.trace:
        timeline.write(args.trace, summary)
        if ddp.world.rank == 0:
            write(f"wrote trace {args.trace} (open in chrome://tracing or ui.perfetto.dev)")
    return summary
