"""Shared by the benchmark scripts: timing, the printed table, --json and --plot.

Every script builds rows (dicts) that hold our number, the reference's number and
``ratio`` = ours / reference, then calls ``report(rows, ...)``: the table is always generated from
the measured rows, never typed by hand.
"""
import argparse
import json
import textwrap
import time


def parser(description):
    """An ArgumentParser with the options every benchmark shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", metavar="PATH", help="write the measured rows as JSON")
    p.add_argument("--plot", metavar="PATH", help="save a PNG plot (needs matplotlib)")
    p.add_argument("--repeat", type=int, default=5, help="timed repetitions per measurement (median is kept)")
    return p


def format_table(rows, columns):
    """Render rows as a fixed-width text table; ``columns`` is a list of (key, header, format)."""
    cells = [[hdr for _, hdr, _ in columns]]
    for row in rows:
        cells.append([("-" if row.get(key) is None else fmt.format(row[key])) for key, _, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def report(rows, columns, args, title, plot=None):
    """Print the table; honour --json and --plot. ``plot(rows, ax)`` draws onto a matplotlib axis."""
    print(title)
    print(format_table(rows, columns))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"title": title, "rows": rows}, f, indent=2)
        print(f"wrote {args.json}")
    if args.plot:
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            print("--plot needs matplotlib (pip install matplotlib); no plot written")
            return
        fig, ax = plt.subplots(figsize=(8, 5))
        if plot is not None:
            plot(rows, ax)
        # a long title wrapped to the figure's width, so tight_layout keeps all of it inside the picture
        ax.set_title("\n".join(textwrap.wrap(title, 110)), fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")


def wait_idle(limit, threshold=0.9, window=0.3):
    """Wait up to ``limit`` seconds until the CPUs were >= ``threshold`` idle over ``window`` s
    (Linux /proc/stat; a no-op elsewhere or with limit <= 0)."""
    import os

    def counters():
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    if limit <= 0 or not os.path.exists("/proc/stat"):
        return
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        total0, idle0 = counters()
        time.sleep(window)
        total1, idle1 = counters()
        if idle1 - idle0 >= threshold * max(total1 - total0, 1):
            return


def _window(fn, min_time, clock=time.perf_counter):
    """Seconds per call of ``fn()``, looping it until ``min_time`` has passed (one timing window).
    An ``fn`` with a ``window`` method times its own window (a library run in another process)."""
    if hasattr(fn, "window"):
        return fn.window(min_time, clock)
    n, start = 0, clock()
    while True:
        fn()
        n += 1
        elapsed = clock() - start
        if elapsed >= min_time:
            return elapsed / n


def best_interleaved(fns, rounds=3, repeat=3, min_time=0.05, settle=0.3, idle_limit=0.0, clock=time.perf_counter):
    """Fastest seconds per call of each of ``fns`` (None entries give None), the functions taking
    turns for ``rounds`` rounds of ``repeat`` timing windows each (a window loops the call until
    ``min_time`` has passed). Before each round: wait for idle CPUs (``idle_limit`` s at most), then
    sleep ``settle`` s so the previous library's worker threads (OpenBLAS, OpenMP) have stopped
    spinning on the cores. On a shared machine other work only ever slows a window down, so the
    fastest window is the least disturbed estimate (short windows, many of them, are likelier to
    find a quiet moment), and alternating exposes every library to the same conditions. ``clock``
    is wall time unless told (``time.process_time``: this process's CPU seconds, every thread's)."""
    live = [fn for fn in fns if fn is not None]
    for fn in live:
        fn()
    best = {id(fn): float("inf") for fn in live}
    for _ in range(rounds):
        for fn in live:
            wait_idle(idle_limit)
            time.sleep(settle)
            fn()  # warm caches and wake this library's threads
            for _ in range(repeat):
                best[id(fn)] = min(best[id(fn)], _window(fn, min_time, clock))
    return [best[id(fn)] if fn is not None else None for fn in fns]
