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
    group.add_argument("--pipeline-stages", type=int, default=1, metavar="S",
                       help="split the model into S pipeline stages, one per rank (1F1B schedule); the N ranks form "
                            "N/S data-parallel replicas of the pipeline (default: 1, data parallelism only)")
    group.add_argument("--micro-batches", type=int, default=None, metavar="M",
                       help="micro-batches per batch in the pipeline (default: 2 x stages)")
    group.add_argument("--shard-optimizer", action="store_true",
                       help="ZeRO-1: each rank keeps the optimizer state of 1/N of the parameters (gradients "
                            "reduce-scattered, parameters all-gathered)")


DISTRIBUTED_ONLY = ("compress", "trace", "shard_optimizer")  # --deterministic also means something for one process


def check_arguments(parser, args):
    """Reject the options that mean nothing without --distributed, and the combinations that are not
    supported (parser.error exits)."""
    stages = getattr(args, "pipeline_stages", 1)
    if stages < 1 or (args.micro_batches is not None and args.micro_batches < 1):
        parser.error("--pipeline-stages and --micro-batches must be >= 1")
    if stages > 1:
        if not args.distributed:
            parser.error("--pipeline-stages needs --distributed (and mpirun -np a multiple of the stages)")
        unsupported = [flag for flag, on in (("--shard-optimizer", args.shard_optimizer), ("--compress", args.compress),
                                             ("--checkpoint-dir", getattr(args, "checkpoint_dir", None)),
                                             ("--amp", getattr(args, "amp", None)))
                       if on]
        if unsupported:
            parser.error(f"--pipeline-stages does not combine with {', '.join(unsupported)} yet")
    if args.shard_optimizer and getattr(args, "checkpoint_dir", None):
        parser.error("--shard-optimizer does not combine with --checkpoint-dir in the CLI yet (the API's "
                     "ZeroRedundancyOptimizer.state_dict() checkpoints it)")
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


def data_parallel_rank(args, world):
    """``(replicas, replica)``: how the training data is split (by pipeline replica, not by rank)."""
    stages = getattr(args, "pipeline_stages", 1)
    if world.size % stages:
        raise SystemExit(f"pyneural train: --pipeline-stages {stages} needs a number of ranks that it divides, "
                         f"got {world.size}")
    return world.size // stages, world.rank // stages


def make_trainer(args, model, optimizer, scheduler, timeline, **kwargs):
    """``(trainer, wrapper)`` for a distributed run: a DistributedTrainer over DDP (with
    ``--shard-optimizer`` a ZeroRedundancyOptimizer doing the reduction), or a PipelineTrainer
    over a Pipeline. ``scheduler`` is rebuilt on a sharded optimizer."""
    from .training import DistributedTrainer, PipelineTrainer
    if getattr(args, "pipeline_stages", 1) > 1:
        from .pipeline import Pipeline
        from .sync import broadcast_parameters
        from .comm import get_world
        broadcast_parameters(get_world(), model)
        stages = args.pipeline_stages
        pipe = Pipeline(model, stages=stages, micro_batches=args.micro_batches or 2 * stages,
                        deterministic=args.deterministic, timeline=timeline)
        return PipelineTrainer(pipe, optimizer, scheduler=scheduler, **kwargs), pipe
    ddp = wrap_model(args, model, timeline)
    if args.shard_optimizer:
        from .zero import ZeroRedundancyOptimizer
        group = optimizer.param_groups[0]
        hyper = {k: v for k, v in group.items() if k in optimizer.defaults and k not in ("params", "initial_lr")}
        optimizer = ZeroRedundancyOptimizer(model.parameters(), type(optimizer), deterministic=args.deterministic,
                                            **hyper)
        ddp.require_sync = False  # the sharded optimizer reduce-scatters the gradients itself
        if scheduler is not None:
            scheduler = type(scheduler)(optimizer, T_max=scheduler.T_max)
    return DistributedTrainer(ddp, optimizer, scheduler=scheduler, **kwargs), ddp


def wrap_model(args, model, timeline):
    """The DDP wrapper the flags describe (checks and broadcasts rank 0's parameters)."""
    from .ddp import DistributedDataParallel
    return DistributedDataParallel(model, bucket_cap_mb=args.bucket_cap_mb, compress=args.compress,
                                   deterministic=args.deterministic, timeline=timeline)


def finish(args, ddp, timeline, write):
    """After training (collective): the communication summary, printed through ``write`` on
    rank 0, and the trace file when asked for. Returns the summary."""
    from .ddp import format_comm_summary
    from .pipeline import Pipeline
    if isinstance(ddp, Pipeline):
        from .collectives import gather_bytes
        import json
        parts = gather_bytes(ddp.world, json.dumps(ddp.stats()).encode(), what="gather of pipeline statistics")
        summary = {"pipeline": [json.loads(p) for p in parts] if parts else None}
        if ddp.world.rank == 0:
            for st in summary["pipeline"][:ddp.stages]:
                write(f"pipeline stage {st['stage']}: {st['step_ms']:.1f} ms/step, idle {st['idle_ms']:.1f} ms "
                      f"(bubble {100 * st['bubble_fraction']:.0f}%, 1F1B ideal {100 * st['ideal_bubble_fraction']:.0f}%)")
    else:
        summary = ddp.comm_summary()
        if ddp.world.rank == 0:
            write(f"{ddp.world.size} ranks, {format_comm_summary(summary)}")
    if args.trace:
        timeline.write(args.trace, summary)
        if ddp.world.rank == 0:
            write(f"wrote trace {args.trace} (open in chrome://tracing or ui.perfetto.dev)")
    return summary
