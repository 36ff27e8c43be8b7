"""How the OpenMP runtime's idle threads wait, chosen before pyneural._C loads the runtime.

libgomp (GCC's runtime, which _C links) reads its environment once, when it is loaded. By default
(neither OMP_WAIT_POLICY nor GOMP_SPINCOUNT set) a thread that finds no work, the workers between
two parallel regions and the team at every barrier, spins 300,000 times before it sleeps: one spin
(a `pause`) took 35-75 ns here, so that is 10-20 ms, longer than a whole training step. On a quiet
machine the spinning costs nothing, each thread has its own core. With another process on one of
the cores it is ruinous: the spinning thread takes half of a core from the very thread it waits for
(a worker descheduled behind the other process, or the Python thread that would issue the next
kernel), and 2 threads train several times slower than 1 (bench/NOTES.md, "Busy machine").

So, before the runtime loads, pyneural sets OMP_WAIT_POLICY=passive: an idle thread sleeps at once
(a futex) and gives the core back. Measured here with other work on the machine, this beat both the
default and short spins (1,000 spins, 35-75 us; 10,000): 2 threads no longer lose to 1, with our
busy neighbour stopped or running. Its cost is a wake-up (~10-50 us) at the start and end of each
parallel region where a spinning thread would have been there already; on an idle machine that is
predicted to cost some percent of a small training step and has not been measured (no idle machine
was available; bench/NOTES.md, "Busy machine", says how to check). The variable is removed again
once the runtime has read it, so child processes see the environment the user gave. A setting of
the user's own (OMP_WAIT_POLICY or GOMP_SPINCOUNT) is left alone, and so is a runtime another
library (torch) loaded first: it has read its environment already and keeps its default;
``describe()`` says which of these happened. torch links the same libgomp (one copy per process),
so in a process that imports pyneural first torch's threads wait the same way.
"""
import os

# What idle OpenMP threads do, set before the runtime loads. bench/NOTES.md, "Busy machine", has
# the measurements (libgomp's default 300,000 spins / 10,000 / 1,000 / passive) that chose it.
POLICY = ("OMP_WAIT_POLICY", "passive")

USER_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
_RUNTIMES = ("libgomp", "libomp", "libiomp5")

_outcome = "not configured (pyneural._threads.prepare was not called)"
_sleeps = False


def runtime_loaded(maps="/proc/self/maps"):
    """True when an OpenMP runtime is already mapped into this process (Linux; False elsewhere)."""
    try:
        with open(maps) as f:
            return any(os.path.basename(line.rsplit(" ", 1)[-1].strip()).startswith(_RUNTIMES) for line in f)
    except OSError:
        return False


def prepare(environ=None, loaded=None):
    """Set the wait policy in ``environ`` (default: os.environ) unless the user chose one
    or a runtime is loaded already (``loaded``: default, look). Returns the names set here, for
    ``restore``."""
    global _outcome, _sleeps
    environ = os.environ if environ is None else environ
    user = [f"{name}={environ[name]}" for name in USER_VARIABLES if name in environ]
    if user:
        _outcome = f"the user's {', '.join(user)}"
        _sleeps = (environ.get("OMP_WAIT_POLICY", "").strip().lower() == "passive"
                   and environ.get("GOMP_SPINCOUNT", "0").strip() == "0") or environ.get("GOMP_SPINCOUNT") == "0"
        return []
    if runtime_loaded() if loaded is None else loaded:
        _outcome = "the runtime's default (it was loaded before pyneural, e.g. by torch)"
        _sleeps = False
        return []
    name, value = POLICY
    environ[name] = value
    _outcome = f"{name}={value} (set by pyneural)"
    _sleeps = True
    return [name]


def restore(names, environ=None):
    """Remove the variables ``prepare`` set, once the runtime has read them."""
    environ = os.environ if environ is None else environ
    for name in names:
        environ.pop(name, None)


def describe():
    """How this process's OpenMP threads wait, in words."""
    return _outcome


def helpers_sleep():
    """Whether idle OpenMP threads sleep at once (passive waiting). The kernels' load rule
    (csrc/cpu/parallel_team.h) counts every runnable thread but the caller as another program's;
    spinning helpers of our own would count too and shrink every region to one thread, so the
    rule is on only where they sleep."""
    return _sleeps
