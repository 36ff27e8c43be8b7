"""pyneural.distributed: data-parallel training over MPI (mpi4py).

    import pyneural.distributed as dist
    world = dist.init()                                   # rank, size, local_rank; abort-on-error
    sampler = dist.DistributedSampler(train_set, seed=0)  # each rank a disjoint 1/N
    loader = DataLoader(train_set, batch_size=32, sampler=sampler)
    model = dist.DistributedDataParallel(model)           # checks, broadcasts, buckets
    ... loss.backward(); model.finish_gradient_sync(); optimizer.step()

Run with ``mpirun -np N python train.py``. mpi4py is imported only when ``init()`` runs.
"""
from ._mpi import mpi_available
from .comm import DEFAULT_TIMEOUT, World, get_world, init, is_initialized, is_main
from .ddp import DistributedDataParallel, format_comm_summary
from .pipeline import Pipeline
from .zero import ZeroRedundancyOptimizer
from .sampler import DistributedSampler
from .sync import broadcast_buffers, broadcast_parameters, check_model_consistency
from .timeline import Timeline

__all__ = ["init", "get_world", "is_initialized", "is_main", "World", "DEFAULT_TIMEOUT", "mpi_available",
           "DistributedSampler", "DistributedDataParallel", "Pipeline", "ZeroRedundancyOptimizer", "format_comm_summary", "broadcast_parameters",
           "broadcast_buffers", "check_model_consistency", "Timeline"]
