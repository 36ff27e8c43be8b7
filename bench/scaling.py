"""Data-parallel scaling: training images/s at 1 and N ranks, speedup, efficiency, and how much
of the gradient communication backward hid; with ``--predict``, a model of that scaling fitted to
measurements here and extrapolated to clusters, checked against every point this machine can run.

    python bench/scaling.py                               # 1 and 2 ranks, launched here
    python bench/scaling.py --ranks 1,2,4 --model cnn --image-size 8 --batch 64
    python bench/scaling.py --predict                     # fit, predict, validate (a few minutes)
    python bench/scaling.py --predict --no-validate --models resnet_small

Each rank count runs as its own ``mpirun -np R`` job with OMP_NUM_THREADS=1 in every process,
so 1 rank is compared with 1 thread against R ranks with 1 thread each: on the 2-core machine
this was written on, that is the only fair comparison (more threads than cores would measure
the oversubscription). The 1-rank run trains the plain model (no DistributedDataParallel: the
baseline pays no communication code); R > 1 wrap it in DDP, once per --bucket-cap-mb value: the
default 25 MiB puts this model's gradients in one bucket, which can only start after backward;
0.05 MiB splits them into several, so the first ones travel while backward still runs.

Workload: synthetic labelled images (pyneural.datasets.synthetic_images), per-rank batch
--batch, so the global batch grows with R (weak scaling, as in data-parallel training); each rank
cycles 4 distinct batches built before timing (as bench/train.py), so a step is the framework's
compute and communication, no data loading. The
default, a small ResNet on 3x32x32 images, is compute-bound: ~78k parameters (312 KB of
gradients) against ~0.1 GFLOP per image. ``hidden`` is 1 - exposed/busy from
``DistributedDataParallel.comm_summary``: the share of the time buckets were in flight that
overlapped backward, rather than being waited for after it (the wait includes load imbalance
between ranks, which on a shared machine is most of it).

Efficiency = images/s(R) / (R * images/s(1)). The machine is shared: every configuration runs
--rounds times, interleaved with the others, and keeps its best round (the one least disturbed by
other work), as bench/gemm.py does.

--predict (the model itself is bench/scaling_model.py; every number below is measured here unless
called assumed):

1. *Compute*, one process per model of bench/train.py (mlp and cnn on 1x8x8, resnet_small on
   3x32x32): forward, backward and the optimizer step, and when each
   parameter's gradient is final (a post-accumulate-grad hook: the moment DDP's hook would pack
   it), so each bucket of DDP's own plan (``GradReducer``, default cap 25 MiB) gets a measured
   ready time. For the Sequential models also each layer's forward + backward on one micro-batch
   and its output size (what a pipeline stage computes and sends).
2. *Allreduce*: ``MPI_Allreduce`` of 4 KiB .. 64 MiB (bench/allreduce.py's timer) on 2 and 4 ranks
   over shared memory (``--mca pml ob1 --mca btl sm,self``, Open MPI's default here) and TCP
   (``--mca btl tcp,self``); alpha and beta fitted per transport and rank count (ring formula,
   least squares on the relative error). Two fits of one transport agreeing says the formula holds.
3. *Prediction* for 2, 8, 64, 512 ranks on 10, 25, 100, 400 Gb/s networks, whose beta (the line
   rate) and alpha (one hop's latency: 25 us for TCP over 10 Gb/s Ethernet, 5 us for RoCE or
   InfiniBand) are assumed, with this machine's one-process compute per rank; and the pipeline
   (1F1B) step, stages cut by split_balanced over the measured layer costs.
4. *Validation*: the real thing at 1, 2 and 4 ranks on both transports (DDP steps as in the plain
   mode, per cap in --validate-caps) and Pipeline with 2 and 4 stages, predicted beside measured.
   The machine has 2 cores shared with other work: at 4 ranks (and at 2 when others run) the ranks
   share cores, so the *compute* term is what is contended there; the table shows the compute
   each run really had (step - exposed communication) so the communication part can be judged.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scaling_model as sm  # noqa: E402
from common import format_table, parser, report, wait_idle  # noqa: E402

import pyneural as pn  # noqa: E402
import pyneural.distributed as dist  # noqa: E402
from pyneural import functional as F  # noqa: E402
from pyneural import models, nn  # noqa: E402
from pyneural.datasets import synthetic_images  # noqa: E402
from pyneural.distributed.bucket import GradReducer  # noqa: E402
from pyneural.distributed.launch import mpirun_command  # noqa: E402
from pyneural.distributed.pipeline import split_balanced  # noqa: E402
from pyneural.optim import SGD  # noqa: E402
from pyneural.tensor import Tensor, no_grad  # noqa: E402

PREDICT_IMAGE_SIZE = {"mlp": 8, "cnn": 8, "resnet_small": 32}  # bench/train.py's input shapes
TRANSPORTS = {"default": [], "shm": ["--mca", "pml", "ob1", "--mca", "btl", "sm,self"],
              "tcp": ["--mca", "pml", "ob1", "--mca", "btl", "tcp,self"]}
ALLREDUCE_SIZES = [4096 * 4**i for i in range(8)]  # 4 KiB .. 64 MiB
PREDICT_RANKS = (2, 8, 64, 512)
GBIT = 1e9 / 8  # bytes/s
# (name, beta bytes/s, alpha s): assumed line rates and per-hop latencies, not measured
NETWORKS = [("10 Gb/s TCP", 10 * GBIT, 25e-6), ("25 Gb/s RoCE", 25 * GBIT, 5e-6),
            ("100 Gb/s IB", 100 * GBIT, 5e-6), ("400 Gb/s IB", 400 * GBIT, 5e-6)]
DEFAULT_CAP_MB = 25
NUM_BATCHES = 4  # distinct batches per rank, built before timing and cycled (as bench/train.py)


def parse():
    p = parser("data-parallel training throughput at 1 and N ranks; --predict: the scaling model, checked")
    p.add_argument("--ranks", default="1,2", help="comma-separated rank counts")
    p.add_argument("--model", choices=sorted(models.MODELS), default="resnet_small")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch", type=int, default=32, help="per-rank batch")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=None,
                   help="run every configuration this many times, interleaved, and keep each one's best "
                        "(default 3; 2 with --predict)")
    p.add_argument("--bucket-cap-mb", default="25,0.05",
                   help="comma-separated bucket caps (MiB); each multi-rank count runs once per cap")
    g = p.add_argument_group("--predict")
    g.add_argument("--predict", action="store_true", help="fit the scaling model, predict, validate")
    g.add_argument("--models", default="mlp,cnn,resnet_small", help="models to predict for")
    g.add_argument("--transports", default="shm,tcp", help="comma-separated subset of shm,tcp")
    g.add_argument("--micro-batches", type=int, default=4, help="pipeline micro-batches per step")
    g.add_argument("--min-time", type=float, default=0.1, help="seconds per allreduce timing repetition")
    g.add_argument("--no-validate", action="store_true", help="skip the predicted-vs-measured runs")
    g.add_argument("--validate-ranks", default="1,2,4")
    g.add_argument("--validate-caps", default="25,0.05", help="bucket caps (MiB) of the DDP validation runs")
    g.add_argument("--pipeline-model", default="cnn", choices=("mlp", "cnn"))
    g.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each job wait up to SECONDS for idle CPUs (shared machines; Linux)")
    p.add_argument("--worker", choices=("ddp", "allreduce", "pipeline"), default="ddp", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    p.add_argument("--layer-micro-batch", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--balance", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rounds is None:
        args.rounds = 2 if args.predict else 3
    return args


def build(name, image_size):
    channels = 1 if name in ("cnn", "mlp") else 3
    shape = (channels, image_size, image_size)
    if name == "mlp":
        model = models.mlp(in_features=int(np.prod(shape)))
    elif name == "cnn":
        model = models.cnn(in_channels=channels, image_size=image_size)
    else:
        model = models.resnet_small(in_channels=channels)
    return model, shape


def bucket_plan(named_arrays, cap_mb):
    """DDP's bucket plan (bucket.GradReducer's own planning, no MPI): [(bytes, [param index])]."""
    reducer = GradReducer(None, named_arrays, cap_bytes=cap_mb * 2**20)
    return [(b.nbytes, [s.index for s in b.slots]) for b in reducer.buckets]


# -- workers: run under mpirun, rank 0 writes --worker-out ---------------------------------------

def _gather_to_file(world, args, result):
    results = world.comm.gather(result, root=0)
    if world.rank == 0:
        with open(args.worker_out, "w") as f:
            json.dump(results, f)


def ddp_worker(args):
    """DDP training steps (the plain model on one rank); per rank: mean forward, backward and
    other seconds per step, the wall time, the communication summary; on one rank also each
    gradient's ready time and, with --layer-micro-batch, the per-layer costs."""
    world = dist.init(timeout=600)
    pn.manual_seed(0)
    model, shape = build(args.model, args.image_size)
    data = synthetic_images(args.batch * NUM_BATCHES, shape=shape, seed=1 + world.rank)
    images, labels = data.arrays
    cut = [slice(i * args.batch, (i + 1) * args.batch) for i in range(NUM_BATCHES)]
    batches = [(Tensor(images[c]), Tensor(labels[c])) for c in cut]
    net = dist.DistributedDataParallel(model, bucket_cap_mb=float(args.bucket_cap_mb)) if world.size > 1 else model
    opt = SGD(model.parameters(), lr=0.01, momentum=0.9)
    params = list(model.parameters())
    ready = np.zeros(len(params))
    clock = {"backward": 0.0}
    if world.size == 1:
        def note(i, _param):
            ready[i] += time.perf_counter() - clock["backward"]
        for i, p in enumerate(params):
            p.register_post_accumulate_grad_hook(lambda param, i=i: note(i, param))
    phases = np.zeros(3)  # forward, backward, optimizer step
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            world.comm.Barrier()
            start = time.perf_counter()
            phases[:] = 0
            ready[:] = 0
        x, y = batches[step % NUM_BATCHES]
        t1 = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        t2 = clock["backward"] = time.perf_counter()
        loss.backward()
        if world.size > 1:
            net.finish_gradient_sync()
        t3 = time.perf_counter()
        opt.step()
        t4 = time.perf_counter()
        phases += (t2 - t1, t3 - t2, t4 - t3)
    world.comm.Barrier()
    seconds = time.perf_counter() - start
    result = {"rank": world.rank, "ranks": world.size, "seconds": seconds,
              "images_per_s": args.batch * world.size * args.steps / seconds,
              "step_ms": seconds / args.steps * 1e3,
              "params": int(sum(p.data.size for p in params)),
              "forward": phases[0] / args.steps, "backward": phases[1] / args.steps, "step": phases[2] / args.steps,
              "comm": net.comm_summary() if world.size > 1 else None}
    if world.size == 1:
        result["ready"] = (ready / args.steps).tolist()
        if args.layer_micro_batch and isinstance(model, nn.Sequential):
            x, y = data.arrays
            result["layers"] = layer_costs(model, x[:args.layer_micro_batch], y[:args.layer_micro_batch])
    _gather_to_file(world, args, result)


def layer_costs(model, x, y, repeat=15):
    """Per layer of a Sequential on one micro-batch: the median seconds of forward + backward
    (the last layer with the loss; gradients accumulate as over a pipeline's micro-batches), and
    the output's bytes per sample (what a stage boundary after it sends each way)."""
    layers, out = list(model.children()), []
    inputs, target = Tensor(x), Tensor(y)
    for i, layer in enumerate(layers):
        # stage 0's input needs no gradient (unless a first layer without parameters needs one to run backward)
        leaf = Tensor(inputs.data, requires_grad=i > 0 or not list(layer.parameters()))

        def run():
            y_out = layer(leaf)
            if i == len(layers) - 1:
                F.cross_entropy(y_out, target).backward()
            else:
                y_out.backward(Tensor(np.ones_like(y_out.data)))
            return y_out
        y_out = run()
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        out.append({"layer": type(layer).__name__, "seconds": float(np.median(times)),
                    "out_bytes_per_sample": int(y_out.data[0].nbytes)})
        with no_grad():
            inputs = layer(inputs)
    return out


def allreduce_worker(args):
    """Median seconds of ``MPI_Allreduce`` (float32, in place) per size: [(bytes, seconds)]."""
    from allreduce import Timer
    world = dist.init(timeout=600)
    from mpi4py import MPI
    timer = Timer(world, MPI)
    points = []
    for nbytes in ALLREDUCE_SIZES:
        buf = np.zeros(nbytes // 4, dtype=np.float32)

        def call():
            world.comm.Allreduce(MPI.IN_PLACE, buf)
        iters = timer.iterations(call, args.min_time)
        points.append((nbytes, float(np.median([timer.mean_seconds(call, iters) for _ in range(args.repeat)]))))
    _gather_to_file(world, args, {"rank": world.rank, "points": points})


def pipeline_worker(args):
    """Pipeline(stages = ranks) training steps on one fixed batch; per rank the stats of the
    timed steps (warm-up excluded)."""
    world = dist.init(timeout=600)
    pn.manual_seed(0)
    model, shape = build(args.model, args.image_size)
    balance = [int(b) for b in args.balance.split(",")]
    pipe = dist.Pipeline(model, stages=world.size, micro_batches=args.micro_batches, balance=balance)
    params = list(pipe.parameters())
    opt = SGD(params, lr=0.01, momentum=0.9) if params else None
    x, y = synthetic_images(args.batch, shape=shape, seed=1).arrays

    def step():
        pipe.zero_grad()
        pipe.train_step(x, y)
        if opt is not None:
            opt.step()
    for _ in range(args.warmup):
        step()
    before = pipe.stats()
    for _ in range(args.steps):
        step()
    after = pipe.stats()
    busy = after["step_ms"] * after["steps"] - before["step_ms"] * before["steps"]
    idle = after["idle_ms"] * after["steps"] - before["idle_ms"] * before["steps"]
    _gather_to_file(world, args, {"rank": world.rank, "stage": pipe.stage, "step_ms": busy / args.steps,
                                  "idle_ms": idle / args.steps, "bubble": idle / busy})


def launch(ranks, worker_args, transport, idle_limit=0.0):
    """Run a worker as ``mpirun -np ranks`` over ``transport``, one thread per rank (after waiting
    up to ``idle_limit`` s for idle CPUs); its per-rank results, rank 0's also holding ``load``,
    the 1-minute load average when the job started (how contended the cores were)."""
    wait_idle(idle_limit)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = mpirun_command(ranks, [os.path.abspath(__file__), "--worker-out", out] + worker_args)
        cmd[1:1] = TRANSPORTS[transport]
        subprocess.run(cmd, env=dict(os.environ, OMP_NUM_THREADS="1"), check=True)
        with open(out) as f:
            results = json.load(f)
    results[0]["load"] = load
    return results


def ddp_args(args, model, image_size, cap, layer_micro_batch=0):
    return ["--worker", "ddp", "--model", model, "--image-size", str(image_size), "--batch", str(args.batch),
            "--steps", str(args.steps), "--warmup", str(args.warmup), "--bucket-cap-mb", str(cap),
            "--layer-micro-batch", str(layer_micro_batch)]


# -- the plain scaling measurement ----------------------------------------------------------------

def measure_scaling(args):
    counts = [int(r) for r in args.ranks.split(",")]
    caps = args.bucket_cap_mb.split(",")
    configs = [(r, cap if r > 1 else None) for r in counts for cap in (caps if r > 1 else caps[:1])]
    best = {}
    for _ in range(args.rounds):
        for ranks, cap in configs:
            print(f"running {ranks} rank(s), OMP_NUM_THREADS=1 each, bucket cap {cap or caps[0]} MiB ...", flush=True)
            result = dict(launch(ranks, ddp_args(args, args.model, args.image_size, cap or caps[0]), "default")[0],
                          cap=cap)
            if (ranks, cap) not in best or result["images_per_s"] > best[(ranks, cap)]["images_per_s"]:
                best[(ranks, cap)] = result
    results = [best[c] for c in configs]
    base = next((r["images_per_s"] for r in results if r["ranks"] == 1), None)
    rows = []
    for r in results:
        comm = r["comm"] or {}
        speedup = r["images_per_s"] / base if base else None
        rows.append({"ranks": r["ranks"], "cap": r["cap"], "global_batch": args.batch * r["ranks"],
                     "step_ms": r["step_ms"], "images_per_s": r["images_per_s"], "speedup": speedup,
                     "efficiency": speedup / r["ranks"] if speedup else None,
                     "comm_ms": comm.get("busy_ms"), "exposed_ms": comm.get("exposed_ms"),
                     "hidden": comm.get("hidden_fraction"), "buckets": comm.get("buckets")})
    params = results[0]["params"]
    title = (f"data-parallel scaling: {args.model} on synthetic {args.image_size}x{args.image_size} images, "
             f"{params} parameters ({params * 4 / 1e6:.2f} MB of gradients), per-rank batch {args.batch}, "
             f"{args.steps} timed steps, best of {args.rounds} rounds; OMP_NUM_THREADS=1 per rank, 1 rank = plain "
             f"model without DDP")
    columns = [("ranks", "ranks", "{}"), ("cap", "bucket cap MiB", "{}"), ("global_batch", "global batch", "{}"),
               ("step_ms", "step ms", "{:.1f}"),
               ("images_per_s", "images/s", "{:.1f}"), ("speedup", "speedup", "{:.2f}"),
               ("efficiency", "efficiency", "{:.3f}"), ("buckets", "buckets", "{}"),
               ("comm_ms", "comm ms/step", "{:.2f}"), ("exposed_ms", "not hidden ms/step", "{:.2f}"),
               ("hidden", "hidden fraction", "{:.2f}")]
    report(rows, columns, args, title, plot=_plot)


def _plot(rows, ax):
    ranks = [r["ranks"] for r in rows]
    ax.plot(ranks, [r["images_per_s"] for r in rows], marker="o", label="measured")
    base = next((r["images_per_s"] for r in rows if r["ranks"] == 1), None)
    if base:
        ax.plot(ranks, [base * r for r in ranks], linestyle="--", label="linear")
    ax.set_xlabel("ranks")
    ax.set_ylabel("images/s")
    ax.legend()


# -- --predict ------------------------------------------------------------------------------------

def probe_compute(args, names):
    """One process per model (best of --rounds by compute time): forward, backward, optimizer step,
    gradient ready times and, for Sequential models, the layer costs at the pipeline's micro-batch."""
    micro = max(args.batch // args.micro_batches, 1)
    probes = {}
    for _ in range(args.rounds):
        for name in names:
            print(f"compute: {name}, 1 rank ...", flush=True)
            r = launch(1, ddp_args(args, name, PREDICT_IMAGE_SIZE[name], DEFAULT_CAP_MB, micro), "shm",
                       args.wait_idle)[0]
            r["compute"] = {"forward": r["forward"], "backward": r["backward"], "step": r["step"]}
            r["total"] = sum(r["compute"].values())
            if name not in probes or r["total"] < probes[name]["total"]:
                probes[name] = r
    return probes


def measured_buckets(name, probe, cap_mb):
    """[(bytes, ready seconds after backward starts)] of DDP's plan for ``name`` at ``cap_mb``."""
    model, _ = build(name, PREDICT_IMAGE_SIZE[name])
    named = [(n, p.data) for n, p in model.named_parameters() if p.requires_grad]
    return [(nbytes, max(probe["ready"][i] for i in slots)) for nbytes, slots in bucket_plan(named, cap_mb)]


def fit_allreduce(args, transports, rank_counts):
    """Alpha-beta fits per (transport, ranks) from the fastest median of --rounds jobs per size."""
    points = {}
    for _ in range(args.rounds):
        for transport in transports:
            for ranks in rank_counts:
                print(f"allreduce: {transport}, {ranks} ranks ...", flush=True)
                run = launch(ranks, ["--worker", "allreduce", "--min-time", str(args.min_time),
                                     "--repeat", str(args.repeat)], transport, args.wait_idle)[0]["points"]
                old = points.get((transport, ranks))
                if old is not None:
                    run = [(b, min(t, u)) for (b, t), (_, u) in zip(old, run)]
                points[(transport, ranks)] = run
    fits = {}
    for (transport, ranks), pts in points.items():
        alpha, beta, rms = sm.fit_alpha_beta(pts, ranks)
        fits[(transport, ranks)] = {"transport": transport, "ranks": ranks, "alpha": alpha, "beta": beta,
                                    "rms": rms, "points": pts}
    return fits


def print_table(title, rows, columns):
    print(f"\n{title}")
    print(format_table(rows, columns))


def compute_rows(names, probes):
    rows = []
    for name in names:
        p, c = probes[name], probes[name]["compute"]
        plan = measured_buckets(name, p, DEFAULT_CAP_MB)
        rows.append({"model": name, "params": p["params"], "forward": c["forward"] * 1e3,
                     "backward": c["backward"] * 1e3, "step": c["step"] * 1e3, "total": p["total"] * 1e3,
                     "images_per_s": p["images_per_s"], "buckets": len(plan),
                     "bucket_kib": " ".join(f"{b / 1024:.0f}" for b, _ in plan),
                     "ready": " ".join(f"{r * 1e3:.2f}" for _, r in plan)})
    return rows


def fit_rows(fits):
    rows = [{"transport": f["transport"], "ranks": f["ranks"], "alpha_us": f["alpha"] * 1e6,
             "beta": f["beta"] / 1e9, "rms": f["rms"]} for f in fits.values()]
    sizes = []
    for i, nbytes in enumerate(ALLREDUCE_SIZES):
        row = {"size": f"{nbytes // 2**20} MiB" if nbytes >= 2**20 else f"{nbytes // 1024} KiB"}
        for key, f in fits.items():
            row[f"{key[0]}{key[1]}"] = f["points"][i][1] * 1e6
            row[f"{key[0]}{key[1]}_fit"] = sm.ring_allreduce_seconds(nbytes, f["ranks"], f["alpha"], f["beta"]) * 1e6
        sizes.append(row)
    return rows, sizes


def prediction_rows(names, probes, batch):
    rows = []
    for name in names:
        buckets = measured_buckets(name, probes[name], DEFAULT_CAP_MB)
        for network, beta, alpha in NETWORKS:
            row = {"model": name, "network": network}
            for n in PREDICT_RANKS:
                out = sm.data_parallel_step(probes[name]["compute"], buckets, n, alpha, beta, batch)
                row[f"ips{n}"], row[f"eff{n}"] = out["images_per_s"], out["efficiency"]
            rows.append(row)
    return rows


def pipeline_plan(layers, stages, micro):
    """(balance, per-stage seconds per micro-batch, boundary bytes per micro-batch) for ``layers``
    (the probe's layer costs) cut by split_balanced over the measured costs."""
    costs = [layer["seconds"] for layer in layers]
    balance = split_balanced(costs, stages)
    cuts = np.cumsum([0] + balance).tolist()
    stage_seconds = [sum(costs[cuts[s]:cuts[s + 1]]) for s in range(stages)]
    boundary_bytes = [micro * layers[cuts[s + 1] - 1]["out_bytes_per_sample"] for s in range(stages - 1)]
    return balance, stage_seconds, boundary_bytes


def pipeline_rows(names, probes, args):
    rows = []
    micro = max(args.batch // args.micro_batches, 1)
    for name in names:
        layers = probes[name].get("layers")
        if not layers:
            continue
        for stages in (2, 4):
            balance, stage_s, bytes_ = pipeline_plan(layers, stages, micro)
            one = args.micro_batches * sum(stage_s)
            for network, beta, alpha in NETWORKS:
                out = sm.pipeline_step(stage_s, args.micro_batches, [alpha + b / beta for b in bytes_])
                rows.append({"model": name, "stages": stages, "micro": args.micro_batches,
                             "balance": "+".join(map(str, balance)), "boundary_kib": max(bytes_) / 1024,
                             "ideal": sm.bubble_fraction(stages, args.micro_batches), "network": network,
                             "step_ms": out["step"] * 1e3, "bubble": float(np.mean(out["bubble"])),
                             "images_per_s": args.batch / out["step"], "speedup": one / out["step"]})
    return rows


def validate_ddp(args, names, probes, fits, transports, rank_counts):
    caps = [float(c) for c in args.validate_caps.split(",")]
    configs = [(name, None, "shm", 1) for name in names if 1 in rank_counts]
    configs += [(name, cap, t, n) for name in names for cap in caps for t in transports for n in rank_counts if n > 1]
    best = {}
    for _ in range(args.rounds):
        for name, cap, transport, n in configs:
            print(f"validate: {name}, {n} rank(s), {transport}, cap {cap} MiB ...", flush=True)
            # rank 0's result: the wall time is barrier-synchronised, comm_summary averaged over ranks
            r = launch(n, ddp_args(args, name, PREDICT_IMAGE_SIZE[name], cap or DEFAULT_CAP_MB), transport,
                       args.wait_idle)[0]
            key = (name, cap, transport, n)
            if key not in best or r["images_per_s"] > best[key]["images_per_s"]:
                best[key] = r
    rows, cores = [], os.cpu_count() or 1
    for name, cap, transport, n in configs:
        r, probe = best[(name, cap, transport, n)], probes[name]
        base = best.get((name, None, "shm", 1))
        comm = r["comm"] or {"exposed_ms": 0.0, "busy_ms": 0.0, "buckets": 0}
        if n == 1:
            pred = {"step": probe["total"], "exposed": 0.0, "busy": 0.0,
                    "images_per_s": args.batch / probe["total"], "efficiency": 1.0}
        else:
            fit = fits[(transport, n)]
            pred = sm.data_parallel_step(probe["compute"], measured_buckets(name, probe, cap), n, fit["alpha"],
                                         fit["beta"], args.batch)
        rows.append({"model": name, "cap": cap, "buckets": comm["buckets"] or None,
                     "transport": transport if n > 1 else "-", "ranks": n,
                     "oversubscribed": "yes" if n > cores else "no",
                     "pred_step": pred["step"] * 1e3, "step": r["step_ms"],
                     "pred_ips": pred["images_per_s"], "ips": r["images_per_s"],
                     "pred_eff": pred["efficiency"],
                     "eff": r["images_per_s"] / (n * base["images_per_s"]) if base else None,
                     "pred_busy": pred["busy"] * 1e3, "busy": comm["busy_ms"],
                     "pred_exposed": pred["exposed"] * 1e3, "exposed": comm["exposed_ms"],
                     "compute": r["step_ms"] - comm["exposed_ms"], "load": r["load"]})
    return rows


def validate_pipeline(args, probes, fits, transports, rank_counts):
    name, micro = args.pipeline_model, max(args.batch // args.micro_batches, 1)
    layers = probes[name]["layers"]
    configs = [(t, s) for t in transports for s in rank_counts if s > 1]
    best = {}
    for _ in range(args.rounds):
        for transport, stages in configs:
            balance, _, _ = pipeline_plan(layers, stages, micro)
            print(f"validate: pipeline {name}, {stages} stages, {transport} ...", flush=True)
            r = launch(stages, ["--worker", "pipeline", "--model", name, "--image-size", str(PREDICT_IMAGE_SIZE[name]),
                                "--batch", str(args.batch), "--micro-batches", str(args.micro_batches),
                                "--steps", str(args.steps), "--warmup", str(args.warmup),
                                "--balance", ",".join(map(str, balance))], transport, args.wait_idle)
            r.sort(key=lambda s: s["stage"])
            if (transport, stages) not in best or r[0]["step_ms"] < best[(transport, stages)][0]["step_ms"]:
                best[(transport, stages)] = r
    rows = []
    for transport, stages in configs:
        balance, stage_s, bytes_ = pipeline_plan(layers, stages, micro)
        fit = fits[(transport, stages)]
        pred = sm.pipeline_step(stage_s, args.micro_batches, [fit["alpha"] + b / fit["beta"] for b in bytes_])
        for s, measured in enumerate(best[(transport, stages)]):
            rows.append({"transport": transport, "stages": stages, "micro": args.micro_batches, "stage": s,
                         "layers": balance[s], "stage_compute": args.micro_batches * stage_s[s] * 1e3,
                         "pred_step": pred["step"] * 1e3, "step": measured["step_ms"],
                         "ideal": sm.bubble_fraction(stages, args.micro_batches), "pred_bubble": pred["bubble"][s],
                         "bubble": measured["bubble"], "compute": measured["step_ms"] - measured["idle_ms"],
                         "load": best[(transport, stages)][0]["load"]})
    return rows


# Anchors: ResNet-50 measurements quoted in bench/NOTES.md, against the model for its gradient.
RESNET50_IMAGES_PER_S = 194.86   # the seed's one-GPU number
ANCHOR_BATCH = 32                # per GPU (PyTorch DDP's anchor; assumed for the seed's)
ANCHOR_BACKWARD_SHARE = 2 / 3    # backward ~ twice forward's FLOPs (assumed)
ANCHORS = [("seed: 2 GPUs -> 2.0x", 2, 2.0 / 2, None), ("seed: 8 GPUs -> 7.5x", 8, 7.5 / 8, None),
           ("PyTorch DDP: 93% at 16 GPUs", 16, 0.93, None),
           ("Horovod: 90% at 512 GPUs, 25 Gb/s RoCE (flat ring)", 512, 0.90, None),
           ("  same, ring over 64 nodes of 8 GPUs", 512, 0.90, 8)]


def anchor_rows():
    shapes = sm.resnet50_parameter_shapes()
    named = [(f"p{i}", np.broadcast_to(np.float32(0), s)) for i, s in enumerate(shapes)]  # shapes only, no memory
    plan = bucket_plan(named, DEFAULT_CAP_MB)
    step = ANCHOR_BATCH / RESNET50_IMAGES_PER_S
    compute = {"forward": step * (1 - ANCHOR_BACKWARD_SHARE), "backward": step * ANCHOR_BACKWARD_SHARE, "step": 0.0}
    ready = sm.uniform_ready_times([b for b, _ in plan], compute["backward"])
    buckets = [(b, r) for (b, _), r in zip(plan, ready)]
    rows = []
    for label, ranks, measured, per_node in ANCHORS:
        row = {"anchor": label, "ranks": ranks, "measured": f"{measured:.2f} ({measured * ranks:.1f}x)"}
        for network, beta, alpha in NETWORKS:
            ring = ranks // per_node if per_node else ranks  # ranks on the network's ring
            eff = sm.data_parallel_step(compute, buckets, ring, alpha, beta, ANCHOR_BATCH)["efficiency"]
            row[network] = f"{eff:.2f} ({eff * ranks:.1f}x)"
        rows.append(row)
    return rows, plan, step


def predict(args):
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    bad = [n for n in names if n not in models.MODELS] + [t for t in transports if t not in ("shm", "tcp")]
    if bad:
        raise SystemExit(f"--predict: unknown models or transports {bad}; models {sorted(models.MODELS)}, "
                         f"transports shm, tcp")
    rank_counts = sorted({int(r) for r in args.validate_ranks.split(",")})
    started = time.time()
    probes = probe_compute(args, names)
    fits = fit_allreduce(args, transports, [n for n in rank_counts if n > 1] or [2])
    out = {}

    rows = out["compute"] = compute_rows(names, probes)
    print_table(f"measured compute, one process, OMP_NUM_THREADS=1, per-rank batch {args.batch}, mean of {args.steps} "
                f"steps, best of {args.rounds} runs (batches already in memory; buckets: DDP's plan at "
                f"{DEFAULT_CAP_MB} MiB; ready = when each bucket's last gradient was final, ms after backward "
                f"started)", rows,
                [("model", "model", "{}"), ("params", "params", "{}"), ("forward", "forward ms", "{:.2f}"),
                 ("backward", "backward ms", "{:.2f}"), ("step", "optimizer ms", "{:.2f}"),
                 ("total", "step ms", "{:.2f}"),
                 ("images_per_s", "images/s", "{:.0f}"), ("buckets", "buckets", "{}"),
                 ("bucket_kib", "bucket KiB", "{}"), ("ready", "ready ms", "{}")])

    rows, sizes = fit_rows(fits)
    out["fits"], out["allreduce"] = rows, sizes
    print_table("measured MPI_Allreduce (float32, in place; fastest of the per-job medians), fitted to "
                "T = 2(N-1) alpha + 2(N-1)/N bytes / beta by least squares on the relative error; rms = the "
                "fit's rms relative error", rows,
                [("transport", "transport", "{}"), ("ranks", "ranks", "{}"), ("alpha_us", "alpha us", "{:.2f}"),
                 ("beta", "beta GB/s", "{:.2f}"), ("rms", "rms rel. error", "{:.3f}")])
    cols = [("size", "size", "{}")]
    for transport, ranks in fits:
        cols += [(f"{transport}{ranks}", f"{transport} {ranks}r us", "{:.1f}"),
                 (f"{transport}{ranks}_fit", "fit", "{:.1f}")]
    print_table("allreduce time per size: measured and fitted", sizes, cols)

    rows = out["prediction"] = prediction_rows(names, probes, args.batch)
    nets = ", ".join(f"{n}: alpha {a * 1e6:.0f} us, beta {b / 1e9:.2f} GB/s" for n, b, a in NETWORKS)
    cols = [("model", "model", "{}"), ("network", "network", "{}")]
    for n in PREDICT_RANKS:
        cols += [(f"ips{n}", f"{n}r images/s", "{:.0f}"), (f"eff{n}", "eff", "{:.3f}")]
    print_table(f"predicted data parallelism (measured: each rank's compute = this machine's one process, bucket "
                f"sizes and ready times; assumed: the networks ({nets}), one rank per machine, a flat ring)",
                rows, cols)

    rows = out["pipeline_prediction"] = pipeline_rows(names, probes, args)
    if rows:
        print_table(f"predicted pipeline (1F1B), batch {args.batch}: stages cut by measured layer cost "
                    f"(split_balanced), transfers alpha + bytes/beta each way per boundary and micro-batch; ideal = "
                    f"(S-1)/(M+S-1); bubble = predicted idle share, mean over stages; speedup vs one process "
                    f"running the same micro-batches", rows,
                    [("model", "model", "{}"), ("stages", "S", "{}"), ("micro", "M", "{}"),
                     ("balance", "layers", "{}"), ("boundary_kib", "boundary KiB/mb", "{:.1f}"),
                     ("ideal", "ideal bubble", "{:.3f}"), ("network", "network", "{}"),
                     ("step_ms", "step ms", "{:.2f}"), ("bubble", "bubble", "{:.3f}"),
                     ("images_per_s", "images/s", "{:.0f}"), ("speedup", "speedup", "{:.2f}")])

    rows, plan, step = anchor_rows()
    out["anchors"] = rows
    print_table(f"anchors: a ResNet-50-sized gradient (25.6 M fp32 parameters, {len(plan)} buckets at {DEFAULT_CAP_MB} "
                f"MiB), compute assumed {step * 1e3:.0f} ms per step per GPU ({ANCHOR_BATCH} images at "
                f"{RESNET50_IMAGES_PER_S} img/s, backward {ANCHOR_BACKWARD_SHARE:.2f} of it, gradients ready "
                f"uniformly over backward); efficiency (speedup) measured by others vs predicted", rows,
                [("anchor", "anchor", "{}"), ("ranks", "ranks", "{}"), ("measured", "measured", "{}")]
                + [(n, n, "{}") for n, _, _ in NETWORKS])

    if not args.no_validate:
        rows = out["validation"] = validate_ddp(args, names, probes, fits, transports, rank_counts)
        print_table(f"validation, DDP: predicted (one-process compute + fitted allreduce, this transport and rank "
                    f"count) vs measured, best of {args.rounds} runs; {os.cpu_count()} cores shared with other work, "
                    f"so at more ranks than idle cores the measured compute (step - exposed) is the contended term",
                    rows,
                    [("model", "model", "{}"), ("cap", "cap MiB", "{:g}"), ("buckets", "buckets", "{}"),
                     ("transport", "transport", "{}"), ("ranks", "ranks", "{}"),
                     ("oversubscribed", "oversub.", "{}"),
                     ("pred_step", "pred step ms", "{:.2f}"), ("step", "meas step ms", "{:.2f}"),
                     ("pred_ips", "pred img/s", "{:.0f}"), ("ips", "meas img/s", "{:.0f}"),
                     ("pred_eff", "pred eff", "{:.3f}"), ("eff", "meas eff", "{:.3f}"),
                     ("pred_busy", "pred comm ms", "{:.2f}"), ("busy", "meas comm ms", "{:.2f}"),
                     ("pred_exposed", "pred exposed ms", "{:.2f}"), ("exposed", "meas exposed ms", "{:.2f}"),
                     ("compute", "meas compute ms", "{:.2f}"), ("load", "load avg", "{:.1f}")])
        if probes.get(args.pipeline_model, {}).get("layers"):
            rows = out["pipeline_validation"] = validate_pipeline(args, probes, fits, transports, rank_counts)
            print_table(f"validation, Pipeline ({args.pipeline_model}, batch {args.batch}, 1F1B): predicted (measured "
                        f"layer costs, fitted transfers) vs measured (Pipeline.stats(): idle / step per stage), best "
                        f"of {args.rounds} runs; pred compute = M x one micro-batch's forward + backward on the "
                        f"stage, meas compute = step - idle", rows,
                        [("transport", "transport", "{}"), ("stages", "S", "{}"), ("micro", "M", "{}"),
                         ("stage", "stage", "{}"), ("layers", "layers", "{}"),
                         ("stage_compute", "pred compute ms", "{:.2f}"), ("compute", "meas compute ms", "{:.2f}"),
                         ("pred_step", "pred step ms", "{:.2f}"), ("step", "meas step ms", "{:.2f}"),
                         ("ideal", "ideal bubble", "{:.3f}"), ("pred_bubble", "pred bubble", "{:.3f}"),
                         ("bubble", "meas bubble", "{:.3f}"), ("load", "load avg", "{:.1f}")])
    print(f"\n--predict took {time.time() - started:.0f} s")
    if args.json:
        out["fits_raw"] = [dict(f, points=[list(p) for p in f["points"]]) for f in fits.values()]
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
        print(f"wrote {args.json}")


def main():
    args = parse()
    if args.worker_out:
        {"ddp": ddp_worker, "allreduce": allreduce_worker, "pipeline": pipeline_worker}[args.worker](args)
    elif args.predict:
        predict(args)
    else:
        measure_scaling(args)


if __name__ == "__main__":
    main()
