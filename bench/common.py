"""Shared by the benchmark scripts: timing, the printed table, --json and --plot.

Every script builds rows (dicts) that hold our number, the reference's number and
``ratio`` = ours / reference, then calls ``report(rows, ...)``: the table is always generated from
the measured rows, never typed by hand.
"""
import argparse
import json
import statistics
import time


def parser(description):
    """An ArgumentParser with the options every benchmark shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", metavar="PATH", help="write the measured rows as JSON")
    p.add_argument("--plot", metavar="PATH", help="save a PNG plot (needs matplotlib)")
    p.add_argument("--repeat", type=int, default=5, help="timed repetitions per measurement (median is kept)")
    return p


def time_call(fn, repeat=5, warmup=1, min_time=0.05):
    """Median seconds of one call of ``fn()``; each repetition loops until ``min_time`` has passed
    so short calls are timed over many iterations."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_time:
                break
        samples.append(elapsed / n)
    return statistics.median(samples)


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
        ax.set_title(title)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        print(f"wrote {args.plot}")
