"""Training throughput: images/s of full steps (forward, loss, backward, SGD step) for the MLP and
the CNN on digits-shaped (1, 8, 8) input and the small ResNet on CIFAR-shaped (3, 32, 32) input,
against PyTorch with the same architecture, batch, optimizer and precision in the same run, on the
CPU or (``--device cuda``) on the same GPU, with ``--amp`` under both libraries' autocast.

The batches are built before timing (data already in memory, cycled), so this measures the
framework: kernels, autograd and optimizer. After warm-up steps, --repeat timing windows of ours
and torch alternate, and each side keeps its fastest window: the cores are shared with other
work, which only ever slows a window down, and alternating exposes both sides to the same
conditions. Before each window the script sleeps --settle seconds so that the other library's
OpenMP threads have stopped spinning on the two cores, and with --wait-idle it also waits until
the CPUs are idle (other people's jobs on a shared machine). ratio = ours / torch (> 1 means
faster than PyTorch).

On the CPU torch runs in a child process of its own (bench/torch_worker.py, which never imports
pyneural), under its own OpenMP defaults, and the two processes take turns window by window.
pyneural sets OMP_WAIT_POLICY=passive for its process, libgomp is one copy per process, and torch's
threads sleeping between regions cost it 1.5-2x at small batches; --torch-process shared times it
in this process instead (the old way, and the default for --device cuda).

    python bench/train.py                      # all models, batches 32 128 512
    python bench/train.py --quick              # fewer repetitions, smaller ResNet batches
    python bench/train.py --models cnn --batches 32 --profile 15   # where does a step go?
    python bench/train.py --device cuda [--amp bf16]              # on the GPU, vs PyTorch there
    python bench/train.py --models resnet --channels-last --threads 1 --clock cpu   # a busy machine

--clock cpu times CPU seconds of the process (time.process_time) instead of wall time: on a machine
shared past its cores, wall time measures the other jobs (two runs minutes apart differed 2x), CPU
time mostly the work. With --threads 1 it is a step's work; with more threads it also counts
OpenMP's spinning. The table then reads images per CPU-second.

    python bench/train.py --contend --models cnn --batches 32     # quiet vs one core busy, side by side

--contend: the same comparison on a machine where another program keeps one core busy (the normal
case on laptops, CI and shared hosts). The script starts that program itself, a child Python
process in a busy loop, and alternates: each round times ours and torch with the child paused
(SIGSTOP: "quiet") and again with it running ("busy"), so both conditions see the same other
load; it reports the median window of each (not the best: under contention the fastest window
is the lucky one) and kills the child on exit, error or Ctrl-C. --threads takes a list there
(e.g. 1,2) to check that a second thread never makes a busy run slower.
"""
import cProfile
import io
import json
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import best_interleaved, parser, report  # noqa: E402
from torch_worker import torch_step_fn as _torch_step_fn  # noqa: E402

import pyneural as pn  # noqa: E402
from pyneural import functional as F  # noqa: E402
from pyneural import models, optim  # noqa: E402

MODELS = ("mlp", "cnn", "resnet")
INPUT_SHAPES = {"mlp": (1, 8, 8), "cnn": (1, 8, 8), "resnet": (3, 32, 32)}
LR, MOMENTUM = 0.01, 0.9
NUM_BATCHES = 4  # distinct batches cycled through: real data movement, still all in memory


MODEL_NAMES = {"mlp": "mlp", "cnn": "cnn", "resnet": "resnet_small"}


def make_batches(name, batch, rng):
    shape = INPUT_SHAPES[name]
    if name == "resnet":
        data = pn.datasets.synthetic_images(NUM_BATCHES * batch, shape=shape, seed=0)
        x, y = data.arrays
    else:
        train, _ = pn.datasets.digits()
        x, y = train.arrays
        idx = rng.integers(0, len(y), size=NUM_BATCHES * batch)
        x, y = x[idx], y[idx]
    return [(np.ascontiguousarray(x[i * batch:(i + 1) * batch]), y[i * batch:(i + 1) * batch].copy())
            for i in range(NUM_BATCHES)]


AMP_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


def ours_step_fn(name, batches, device="cpu", amp=None, channels_last=False):
    model = models.MODELS[MODEL_NAMES[name]]().to(device)
    layout = pn.channels_last if channels_last and name != "mlp" else pn.contiguous_format
    model.to(memory_format=layout)
    opt = optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    tensors = [(pn.tensor(x, device=device).contiguous(memory_format=layout), pn.tensor(y, device=device))
               for x, y in batches]
    autocast = (lambda: pn.autocast(device, dtype=getattr(pn, AMP_DTYPES[amp]))) if amp else None
    scaler = pn.amp.GradScaler(device) if amp == "fp16" else None
    state = {"i": 0}

    def step():
        x, y = tensors[state["i"] % NUM_BATCHES]
        state["i"] += 1
        if autocast is None:
            loss = F.cross_entropy(model(x), y)
        else:
            with autocast():
                loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return loss.item()  # the step's one device-to-host read: it also waits for the GPU
    return step


def torch_step_fn(name, batches, device="cpu", amp=None, channels_last=False):
    """One step of the torch twin, in this process (it then shares pyneural's OpenMP runtime)."""
    return _torch_step_fn(name, batches, device, amp, channels_last, LR, MOMENTUM, MODEL_NAMES[name])


class TorchProcess:
    """The torch twin in a child process of its own (bench/torch_worker.py), which never imports
    pyneural: torch's OpenMP threads then wait the way they do for torch's users. In this process
    they would sleep between regions under pyneural's OMP_WAIT_POLICY=passive (one libgomp per
    process), which slowed torch 1.5-2x at small batches. Calling it runs one step (warm-up);
    ``window`` times a window there, with that process's clock."""

    WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_worker.py")

    def __init__(self, name, batches, device, amp, channels_last, threads):
        self._dir = tempfile.TemporaryDirectory()
        data = os.path.join(self._dir.name, "batches.npz")
        np.savez(data, **{f"x{i}": x for i, (x, _) in enumerate(batches)},
                 **{f"y{i}": y for i, (_, y) in enumerate(batches)})
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        self.proc = subprocess.Popen([sys.executable, self.WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env,
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        spec = {"name": name, "data": data, "device": device, "amp": amp, "channels_last": channels_last,
                "lr": LR, "momentum": MOMENTUM, "model_name": MODEL_NAMES[name]}
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.set_threads(threads)

    def _ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer or answer.startswith("'error"):
            raise RuntimeError(f"bench/torch_worker.py did not answer {command!r} (exit code {self.proc.poll()}): "
                               f"{answer.strip() or 'no reply'}")
        return answer

    def __call__(self):
        return float(self._ask("step"))

    def window(self, min_time, clock=time.perf_counter):
        return float(self._ask(f"window {min_time} {'cpu' if clock is time.process_time else 'wall'}"))

    def set_threads(self, n):
        return int(self._ask(f"threads {n}"))

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._dir.cleanup()


def torch_side(args, name, data, device, channels_last, threads):
    """The torch step to time beside ours: in its own process (--torch-process own, the CPU default)
    or in this one."""
    import torch
    if args.torch_process == "own":
        return TorchProcess(name, data, device, args.amp, channels_last, threads)
    torch.manual_seed(0)
    return torch_step_fn(name, data, device, args.amp, channels_last)


def omp_threads(n):
    """Set the OpenMP team size of pyneural._C (already loaded with pyneural) to ``n``; return
    what the runtime reports, or "?" off Linux/libgomp (then OMP_NUM_THREADS decides)."""
    import ctypes
    try:
        with open("/proc/self/maps") as maps:
            path = next(line.split()[-1] for line in maps if "libgomp" in line)
        gomp = ctypes.CDLL(path)
    except (OSError, StopIteration):
        return "?"
    gomp.omp_set_num_threads(int(n))
    return gomp.omp_get_max_threads()


def time_interleaved(steps, repeat, warmup, min_time, settle, idle_limit, clock=time.perf_counter):
    """Seconds per call of each function in ``steps``: the fastest of ``repeat`` windows each,
    the functions taking turns."""
    for step in steps:
        for _ in range(warmup):
            step()
    return best_interleaved(steps, rounds=repeat, repeat=1, min_time=min_time, settle=settle,
                            idle_limit=idle_limit, clock=clock)


# The busy child: spins, and exits by itself if its parent dies (a SIGKILLed benchmark leaves nothing
# behind; a stopped child is also killed through PR_SET_PDEATHSIG below where Linux has it).
_BUSY_LOOP = """
import os
parent = os.getppid()
while os.getppid() == parent:
    for _ in range(200000):
        pass
"""


def _die_with_parent():
    try:
        import ctypes
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class BusyCore:
    """One core's worth of someone else's work: a child Python process in a busy loop, started
    paused. ``busy(True)`` resumes it (SIGCONT), ``busy(False)`` stops it (SIGSTOP); leaving the
    ``with`` block kills it, also on an exception or Ctrl-C."""

    def __init__(self):
        self.proc = None

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", _BUSY_LOOP], stdin=subprocess.DEVNULL,
                                     preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        self.busy(False)
        return self

    def busy(self, on):
        self.proc.send_signal(signal.SIGCONT if on else signal.SIGSTOP)
        if on:
            time.sleep(0.05)  # let the scheduler place it before the window starts

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()
        return False


def time_contended(steps, thread_counts, set_threads, busy_core, rounds, warmup, min_time, settle):
    """Median seconds per call of each function in ``steps`` at each thread count, quiet and busy:
    {(threads, busy, index): seconds}. Every round visits every thread count, quiet then busy,
    and within each the functions take turns, one window each."""
    for step in steps:
        for _ in range(warmup):
            step()
    samples = {}
    try:
        for _ in range(rounds):
            for threads in thread_counts:
                set_threads(threads)
                for busy in (False, True):
                    busy_core.busy(busy)
                    for i, step in enumerate(steps):
                        time.sleep(settle)
                        step()  # wake this library's threads
                        if hasattr(step, "window"):  # timed in its own process
                            samples.setdefault((threads, busy, i), []).append(step.window(min_time))
                            continue
                        n, start = 0, time.perf_counter()
                        while time.perf_counter() - start < min_time or n == 0:
                            step()
                            n += 1
                        samples.setdefault((threads, busy, i), []).append((time.perf_counter() - start) / n)
    finally:
        busy_core.busy(False)
    return {key: statistics.median(values) for key, values in samples.items()}


def profile_steps(step, seconds_per_step, top):
    """cProfile about half a second of steps; return the top functions by own time."""
    steps = max(3, int(0.5 / max(seconds_per_step, 1e-6)))
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        step()
    prof.disable()
    out = io.StringIO()
    stats = pstats.Stats(prof, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    body = out.getvalue()
    start = body.find("   ncalls")
    return f"({steps} steps profiled; times are totals over them)\n" + body[start:].rstrip()


def _device_name(device):
    try:
        from pyneural.cuda import _backend
        cp = _backend.cupy()
        if getattr(cp.cuda, "emulated", False):
            return "the emulated CUDA device"
        return cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception as e:  # the title only
        return f"{device} ({type(e).__name__})"


def contend(args, names, batches, resnet_batches, thread_counts, torch, repeat):
    """--contend: quiet and busy tables side by side, one row per model, batch and thread count."""
    theirs = []

    def set_threads(n):
        if torch is not None:
            torch.set_num_threads(n)
        for side in theirs:
            side.set_threads(n)
        omp_threads(n)

    try:
        from pyneural._threads import describe as wait_policy
    except ImportError:  # a pyneural from before it chose the policy (comparing versions)
        wait_policy = lambda: "the runtime's default"  # noqa: E731
    rng = np.random.default_rng(0)
    rows = []
    load_before = os.getloadavg()
    with BusyCore() as busy_core:
        for name in names:
            for batch in (resnet_batches if name == "resnet" else batches):
                data = make_batches(name, batch, rng)
                warmup, min_time = (2, 0.0) if name == "resnet" else (5, 0.1 if args.quick else 0.25)
                pn.manual_seed(0)
                steps = [ours_step_fn(name, data, "cpu", args.amp, args.channels_last)]
                if torch is not None:
                    steps.append(torch_side(args, name, data, "cpu", args.channels_last, thread_counts[0]))
                    theirs[:] = [steps[-1]] if hasattr(steps[-1], "window") else []
                try:
                    t = time_contended(steps, thread_counts, set_threads, busy_core, repeat, warmup, min_time,
                                       args.settle)
                finally:
                    for side in theirs:
                        side.close()
                for threads in thread_counts:
                    row = {"model": name, "batch": batch, "threads": threads}
                    for busy, tag in ((False, "quiet"), (True, "busy")):
                        ours_t, torch_t = t[(threads, busy, 0)], t.get((threads, busy, 1))
                        row[f"{tag}_ours"] = batch / ours_t
                        row[f"{tag}_torch"] = batch / torch_t if torch_t else None
                        row[f"{tag}_ratio"] = torch_t / ours_t if torch_t else None
                    row["ours_kept"] = row["busy_ours"] / row["quiet_ours"]
                    row["torch_kept"] = row["busy_torch"] / row["quiet_torch"] if row["busy_torch"] else None
                    rows.append(row)
                    print(f"  {name:>6} batch {batch:>4} threads {threads}: quiet ours {row['quiet_ours']:9,.0f} "
                          f"torch {row['quiet_torch'] or 0:9,.0f} | busy ours {row['busy_ours']:9,.0f} "
                          f"torch {row['busy_torch'] or 0:9,.0f}", flush=True)
    load_after = os.getloadavg()
    columns = [("model", "model", "{}"), ("batch", "batch", "{}"), ("threads", "threads", "{}"),
               ("quiet_ours", "quiet ours", "{:,.0f}"), ("quiet_torch", "quiet torch", "{:,.0f}"),
               ("quiet_ratio", "quiet ratio", "{:.2f}"),
               ("busy_ours", "busy ours", "{:,.0f}"), ("busy_torch", "busy torch", "{:,.0f}"),
               ("busy_ratio", "busy ratio", "{:.2f}"),
               ("ours_kept", "ours busy/quiet", "{:.2f}"), ("torch_kept", "torch busy/quiet", "{:.2f}")]
    title = (f"training throughput, quiet vs one core busy (a child Python busy loop), images/s, median of "
             f"{repeat} windows; ratio = ours / torch; OpenMP wait: {wait_policy()}"
             f"{'; torch in its own process, its defaults' if args.torch_process == 'own' else ''}; load average "
             f"{load_before[0]:.2f} before, {load_after[0]:.2f} after (1 min, {os.cpu_count()} cores)")

    def plot(rows, ax):
        labels = [f"{r['model']}/{r['batch']}/{r['threads']}t" for r in rows]
        xs = np.arange(len(rows))
        for k, (key, label) in enumerate((("quiet_ours", "pyneural quiet"), ("quiet_torch", "torch quiet"),
                                          ("busy_ours", "pyneural busy"), ("busy_torch", "torch busy"))):
            ax.bar(xs - 0.3 + 0.2 * k, [r[key] or 0 for r in rows], 0.2, label=label)
        ax.set_xticks(xs, labels, rotation=45)
        ax.set_ylabel("images/s")
        ax.legend()

    report(rows, columns, args, title, plot=plot)


def main():
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 windows of 0.1 s, ResNet at batch <= 128 only")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {','.join(MODELS)}")
    p.add_argument("--batches", default="32,128,512", help="comma-separated batch sizes (default: 32,128,512)")
    p.add_argument("--resnet-batches", default=None,
                   help="batch sizes for the ResNet (default: --batches; with --quick 32,128)")
    p.add_argument("--settle", type=float, default=0.2, help="idle seconds before each timing window")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each window wait up to SECONDS for idle CPUs (shared machines; Linux)")
    p.add_argument("--threads", default="2",
                   help="OpenMP threads for both libraries (default: 2; with --contend a comma-separated list)")
    p.add_argument("--contend", action="store_true",
                   help="quiet and with one core kept busy by a child process, side by side (median windows)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                   help="where both libraries train (cuda: pyneural's CUDA kernels vs PyTorch on the same GPU)")
    p.add_argument("--amp", choices=tuple(AMP_DTYPES), default=None,
                   help="autocast both libraries to bf16 / fp16 (fp16 with a GradScaler)")
    p.add_argument("--channels-last", action="store_true",
                   help="both libraries' convolutional models and batches in channels_last (NHWC memory; the "
                        "fastest GPU layout; default on for --device cuda)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="time wall seconds, or CPU seconds of the process (busy machines; see above)")
    p.add_argument("--torch-process", choices=("own", "shared"), default=None,
                   help="own: torch in a child process under its own OpenMP defaults (the CPU default); shared: "
                        "in this process, whose OpenMP runtime pyneural set to wait passively (the cuda default)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="cProfile our steps where ratio < 1 and print the top N functions by own time")
    args = p.parse_args()
    if args.torch_process is None:
        args.torch_process = "own" if args.device == "cpu" else "shared"
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(names) - set(MODELS)
    if unknown:
        p.error(f"--models: unknown {sorted(unknown)}; choose from {','.join(MODELS)}")
    batches = [int(b) for b in args.batches.split(",")]
    resnet_batches = ([int(b) for b in args.resnet_batches.split(",")] if args.resnet_batches
                      else ([b for b in batches if b <= 128] or batches[:1]) if args.quick else batches)
    repeat = 3 if args.quick else args.repeat
    thread_counts = [int(t) for t in args.threads.split(",")]
    if len(thread_counts) > 1 and not args.contend:
        p.error("--threads: a list only with --contend")
    if args.contend and args.device != "cpu":
        p.error("--contend measures the CPU (--device cpu)")
    try:
        import torch
        # pyneural._C and torch share one OpenMP runtime (libgomp, loaded once per process), so
        # this sets both sides' team size; both are read back for the title.
        torch.set_num_threads(thread_counts[0])
        torch_threads = torch.get_num_threads()
    except ImportError:
        torch = None
        print("torch is not installed: measuring pyneural only")
    ours_threads = omp_threads(thread_counts[0])
    if args.contend:
        return contend(args, names, batches, resnet_batches, thread_counts, torch, repeat)

    channels_last = args.channels_last or args.device == "cuda"
    if torch is not None and args.device == "cuda" and not torch.cuda.is_available():
        torch = None
        print("torch has no CUDA device here: measuring pyneural only")
    rng = np.random.default_rng(0)
    rows, profiles = [], []
    for name in names:
        for batch in (resnet_batches if name == "resnet" else batches):
            data = make_batches(name, batch, rng)
            # ResNet steps are ~100x longer: fewer of them, and one step per timing window is enough.
            warmup, min_time = (2, 0.0) if name == "resnet" else (5, 0.1 if args.quick else 0.25)
            pn.manual_seed(0)
            steps = [ours_step_fn(name, data, args.device, args.amp, channels_last)]
            if torch is not None:
                steps.append(torch_side(args, name, data, args.device, channels_last, thread_counts[0]))
            try:
                times = time_interleaved(steps, repeat, warmup, min_time, args.settle, args.wait_idle,
                                         time.process_time if args.clock == "cpu" else time.perf_counter)
            finally:
                if hasattr(steps[-1], "close"):
                    steps[-1].close()
            ours_step, ours_t, torch_t = steps[0], times[0], (times[1] if torch is not None else None)
            row = {"model": name, "batch": batch, "ours": batch / ours_t,
                   "torch": batch / torch_t if torch_t else None,
                   "ratio": torch_t / ours_t if torch_t else None}
            rows.append(row)
            print(f"  {name:>6} batch {batch:>4}: ours {row['ours']:10,.0f} img/s"
                  + (f"   torch {row['torch']:10,.0f} img/s   ratio {row['ratio']:.2f}" if torch_t else ""),
                  flush=True)
            if args.profile and torch_t and row["ratio"] < 1.0:
                profiles.append((name, batch, row["ratio"], profile_steps(ours_step, ours_t, args.profile)))

    columns = [("model", "model", "{}"), ("batch", "batch", "{}"), ("ours", "ours img/s", "{:,.0f}"),
               ("torch", "torch img/s", "{:,.0f}"), ("ratio", "ratio", "{:.2f}")]
    threads = f"threads: pyneural {ours_threads}" + (f", torch {torch_threads}" if torch is not None else ", no torch")
    if torch is not None:
        threads += ("; torch in its own process" if args.torch_process == "own"
                    else "; torch in this process (pyneural's OpenMP wait policy)")
    where = "" if args.device == "cpu" else f" on {_device_name(args.device)}"
    precision = f", autocast {args.amp}" if args.amp else ""
    layout = ", channels_last" if channels_last else ""
    unit = "images per CPU-second" if args.clock == "cpu" else "images/s"
    title = (f"training throughput{where}, SGD momentum{precision} ({unit}, best of {repeat} windows; "
             f"{threads}{layout})")

    def plot(rows, ax):
        labels = [f"{r['model']}/{r['batch']}" for r in rows]
        xs = np.arange(len(rows))
        ax.bar(xs - 0.2, [r["ours"] for r in rows], 0.4, label="pyneural")
        ax.bar(xs + 0.2, [r["torch"] or 0 for r in rows], 0.4, label="torch")
        ax.set_xticks(xs, labels, rotation=45)
        ax.set_ylabel("images/s")
        ax.set_yscale("log")
        ax.legend()

    report(rows, columns, args, title, plot=plot)
    for name, batch, ratio, text in profiles:
        print(f"\nprofile: {name} batch {batch} (ratio {ratio:.2f}), top {args.profile} by own time")
        print(text)


if __name__ == "__main__":
    main()
