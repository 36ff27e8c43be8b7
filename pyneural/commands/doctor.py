"""``pyneural doctor``: can this machine (and this MPI job) train with ``--distributed``?

Reports pyneural's build (version, the CPU kernels' instruction set), the MPI library and
version, whether it is CUDA-aware, the OpenMP threads each rank uses, and runs a short
self-test allreduce on host buffers and, where CuPy sees a GPU, on device buffers (falling back
to host staging when the CUDA-aware transfer fails). Run it the way the job will run:

    pyneural doctor                                  # this process alone
    mpirun -np 2 pyneural doctor                     # between processes on this machine
    mpirun -np 8 --hostfile hosts pyneural doctor    # across the machines of a job

Only rank 0 prints. Exit status 0 when every self-test passed on every rank, else 1 (also
without mpi4py).
"""
import sys

from .train import positive_float


def register(subparsers):
    parser = subparsers.add_parser("doctor", help="report the MPI setup and self-test an allreduce",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=positive_float, default=60.0, metavar="SECONDS",
                        help="abort the job when a self-test collective takes longer (default: 60)")
    parser.set_defaults(handler=run)
    return parser


def run(args):
    from pyneural.distributed import doctor

    def out(line):
        print(line, file=sys.stdout, flush=True)

    return 0 if doctor.run(out=out, timeout=args.timeout) else 1
