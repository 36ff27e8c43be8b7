"""Timeline: what every rank did when, as a Chrome trace (chrome://tracing, ui.perfetto.dev).

Each rank records spans (name, lane, start, end) in its own process; ``write`` gathers them on
rank 0, which writes one JSON file with a process per rank and two lanes per process:
``compute`` (data wait, forward, backward, the exposed gradient wait, optimizer step) and
``communication`` (one span per bucket collective, from launch to completion). Backward and the
bucket spans overlapping on screen is the overlap the bucketing buys; the ``grad sync wait``
span inside backward is the communication that was *not* hidden.

Clocks. Spans use ``time.perf_counter``, which is per process (and per machine). ``start()``
passes a barrier and takes each rank's origin right after it, so all ranks share time zero to
within the barrier's exit skew (microseconds on one machine, tens of microseconds across a
network): good enough to see overlap, not to time single messages.

Bucket completion is known only when a test or wait observes it, so a bucket span can end a
little after the transfer did; the exposed wait is measured exactly.
"""
import json
import time

from .collectives import barrier, gather_bytes

COMPUTE, COMMUNICATION = 0, 1
_LANE_NAMES = {COMPUTE: "compute", COMMUNICATION: "communication"}


class _Span:
    __slots__ = ("timeline", "name", "lane", "args", "start")

    def __init__(self, timeline, name, lane, args):
        self.timeline, self.name, self.lane, self.args = timeline, name, lane, args

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.timeline.record(self.name, self.start, time.perf_counter(), self.lane, self.args)
        return False


class _NoSpan:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_NO_SPAN = _NoSpan()


class Timeline:
    """Span recorder for one rank. Disabled, ``span`` returns a shared do-nothing context and
    ``record`` returns at once, so untraced runs pay a method call per span."""

    def __init__(self, world=None, enabled=True):
        self.world = world
        self.enabled = bool(enabled)
        self.events = []
        self.origin = time.perf_counter()

    def start(self):
        """Align time zero across ranks (collective when there is a world)."""
        if self.world is not None and self.world.size > 1:
            barrier(self.world, "timeline clock alignment")
        self.origin = time.perf_counter()

    def span(self, name, lane=COMPUTE, **args):
        if not self.enabled:
            return _NO_SPAN
        return _Span(self, name, lane, args or None)

    def record(self, name, start, end, lane=COMPUTE, args=None):
        """Add a finished span; ``start``/``end`` are ``time.perf_counter()`` values."""
        if self.enabled:
            self.events.append((name, lane, start, end, args))

    def chrome_events(self, rank=0):
        """This rank's spans as Chrome trace 'complete' events (microseconds from the origin)."""
        out = [{"name": "process_name", "ph": "M", "pid": rank, "args": {"name": f"rank {rank}"}},
               {"name": "process_sort_index", "ph": "M", "pid": rank, "args": {"sort_index": rank}}]
        for lane, lane_name in _LANE_NAMES.items():
            out.append({"name": "thread_name", "ph": "M", "pid": rank, "tid": lane, "args": {"name": lane_name}})
        for name, lane, start, end, args in self.events:
            event = {"name": name, "ph": "X", "pid": rank, "tid": lane,
                     "ts": round((start - self.origin) * 1e6, 3), "dur": round((end - start) * 1e6, 3)}
            if args:
                event["args"] = args
            out.append(event)
        return out

    def write(self, path, summary=None):
        """Write the trace of all ranks to ``path`` on rank 0. Collective: every rank calls it.
        ``summary`` (a JSON-able dict) is stored as the trace's ``otherData``."""
        rank = self.world.rank if self.world is not None else 0
        mine = self.chrome_events(rank)
        if self.world is not None and self.world.size > 1:
            gathered = gather_bytes(self.world, json.dumps(mine).encode(), what="gather of trace events")
            if gathered is None:
                return
            events = [e for payload in gathered for e in json.loads(payload)]
        else:
            events = mine
        trace = {"traceEvents": events, "displayTimeUnit": "ms", "otherData": summary or {}}
        with open(path, "w") as f:
            json.dump(trace, f)
