"""The scaling model of ``bench/scaling.py --predict``: pure functions, no MPI, no timing.

Data parallelism. One step on each of N ranks is forward, backward and the optimizer step (the
one-process compute, measured), plus whatever gradient communication is still running when
backward has produced its last gradient. The gradients travel in buckets (DDP's plan), each a
ring allreduce costing

    T(bytes, N) = 2 (N - 1) alpha + 2 (N - 1) / N * bytes / beta

(2(N-1) steps of a reduce-scatter and an allgather, each paying one hop's latency ``alpha``;
every rank sends and receives 2(N-1)/N of the buffer at ``beta`` bytes/s). The buckets share one
link and start in order: bucket i starts when its last gradient is ready and bucket i-1 is done.
What ends after backward is exposed; the rest was hidden behind backward.

Pipeline. S stages, M micro-batches, stage s costing ``c_s`` per micro-batch (forward + backward)
and each of the S-1 boundaries ``t_b`` per transfer (alpha + bytes / beta). On a 1F1B schedule
the step is one micro-batch's trip through every stage and back (sum c_s + 2 sum t_b) plus M-1
more micro-batches on the slowest stage: ``(M - 1) max c_s + sum c_s + 2 sum t_b``. With equal
stages and free transfers that is (M + S - 1) c, so each stage idles the bubble fraction
(S - 1) / (M + S - 1).
"""
import numpy as np


def ring_allreduce_seconds(nbytes, ranks, alpha, beta):
    """Ring allreduce time of ``nbytes`` over ``ranks`` ranks (0 for one rank): see the module doc."""
    if ranks < 1 or nbytes < 0 or alpha < 0 or not beta > 0:
        raise ValueError(f"ring_allreduce_seconds: need ranks >= 1, nbytes >= 0, alpha >= 0, beta > 0; got "
                         f"ranks={ranks}, nbytes={nbytes}, alpha={alpha}, beta={beta}")
    return 2 * (ranks - 1) * alpha + 2 * (ranks - 1) / ranks * nbytes / beta


def fit_alpha_beta(points, ranks):
    """``(alpha, beta, rms_relative_error)`` of the ring formula fitted to ``points`` =
    [(bytes, seconds), ...] measured on ``ranks`` ranks. Least squares on the *relative* error
    (each equation divided by its measured time): the times span four decades from 4 KiB to
    64 MiB, and an unweighted fit would let the largest messages decide alpha too."""
    if ranks < 2:
        raise ValueError(f"fit_alpha_beta: an allreduce on {ranks} rank(s) moves nothing; need ranks >= 2")
    points = [(float(b), float(t)) for b, t in points]
    nbytes = np.array([b for b, _ in points])
    seconds = np.array([t for _, t in points])
    if np.unique(nbytes).size < 2 or np.any(seconds <= 0):
        raise ValueError(f"fit_alpha_beta: need >= 2 distinct sizes with positive times, got {points!r}")
    steps = 2 * (ranks - 1)
    design = np.stack([np.full_like(nbytes, steps), steps / ranks * nbytes], axis=1) / seconds[:, None]
    (alpha, inverse_beta), *_ = np.linalg.lstsq(design, np.ones_like(seconds), rcond=None)
    if not inverse_beta > 0:
        raise ValueError(f"fit_alpha_beta: the times do not grow with the size (1/beta = {inverse_beta:.3g}); "
                         f"points {points!r}")
    relative = design @ np.array([alpha, inverse_beta]) - 1
    return float(alpha), float(1 / inverse_beta), float(np.sqrt(np.mean(relative**2)))


def uniform_ready_times(bucket_bytes, backward_seconds):
    """When each bucket's last gradient is ready, if backward produces gradient bytes at a steady
    rate (buckets in launch order, i.e. from the last layers back)."""
    done = np.cumsum(np.asarray(bucket_bytes, dtype=np.float64))
    return (backward_seconds * done / done[-1]).tolist() if len(done) else []


def overlap(ready, durations, backward_seconds):
    """Schedule buckets on one link in order (bucket i starts at max(ready_i, end of bucket i-1)).
    ``ready`` is relative to the start of backward. Returns ``{"ends", "busy", "exposed"}``:
    each bucket's end, the communication time, and the part after ``backward_seconds``."""
    if len(ready) != len(durations):
        raise ValueError(f"overlap: {len(ready)} ready times for {len(durations)} buckets")
    ends, end = [], 0.0
    for r, d in zip(ready, durations):
        end = max(r, end) + d
        ends.append(end)
    exposed = max(end - backward_seconds, 0.0) if ends else 0.0
    return {"ends": ends, "busy": float(sum(durations)), "exposed": exposed}


def data_parallel_step(compute, buckets, ranks, alpha, beta, batch):
    """Predicted step of data parallelism on ``ranks`` ranks. ``compute``: one process's
    ``forward``, ``backward``, ``step`` seconds; ``buckets``: [(bytes, ready seconds after the
    start of backward)]; ``batch``: per rank. Returns step seconds, exposed and busy
    communication, images/s over all ranks and efficiency = images/s / (ranks x one process's)."""
    one = compute["forward"] + compute["backward"] + compute["step"]
    durations = [ring_allreduce_seconds(b, ranks, alpha, beta) for b, _ in buckets]
    comm = overlap([r for _, r in buckets], durations, compute["backward"])
    step = one + comm["exposed"]
    return {"step": step, "exposed": comm["exposed"], "busy": comm["busy"],
            "images_per_s": batch * ranks / step, "efficiency": one / step}


def bubble_fraction(stages, micro_batches):
    """1F1B's (and GPipe's) idle fraction per stage with equal stages: (S - 1) / (M + S - 1)."""
    if stages < 1 or micro_batches < 1:
        raise ValueError(f"bubble_fraction: need stages, micro_batches >= 1, got {stages}, {micro_batches}")
    return (stages - 1) / (micro_batches + stages - 1)


def pipeline_step(stage_seconds, micro_batches, boundary_seconds):
    """Predicted 1F1B step (module doc) and each stage's idle fraction. ``stage_seconds``:
    forward + backward of one micro-batch per stage; ``boundary_seconds``: one transfer across
    each of the S-1 boundaries (the same each way)."""
    if len(boundary_seconds) != len(stage_seconds) - 1:
        raise ValueError(f"pipeline_step: {len(stage_seconds)} stages need {len(stage_seconds) - 1} boundary "
                         f"times, got {len(boundary_seconds)}")
    step = (micro_batches - 1) * max(stage_seconds) + sum(stage_seconds) + 2 * sum(boundary_seconds)
    return {"step": step, "bubble": [1 - micro_batches * c / step for c in stage_seconds]}


def resnet50_parameter_shapes(num_classes=1000):
    """Parameter shapes of ResNet-50 (He et al. 2016; torchvision's layout, 25,557,032 parameters)
    in registration order: the gradient the anchors of bench/NOTES.md are about."""
    shapes = [(64, 3, 7, 7), (64,), (64,)]  # stem conv, BatchNorm weight and bias
    channels = 64
    for width, blocks in ((64, 3), (128, 4), (256, 6), (512, 3)):
        for block in range(blocks):
            convs = [(width, channels, 1, 1), (width, width, 3, 3), (4 * width, width, 1, 1)]
            if block == 0:  # the projection shortcut
                convs.append((4 * width, channels, 1, 1))
            for conv in convs:
                shapes += [conv, (conv[0],), (conv[0],)]
            channels = 4 * width
    return shapes + [(num_classes, channels), (num_classes,)]
