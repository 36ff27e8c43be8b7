"""Launched by tests/test_distributed.py, alone or under ``mpirun -np N``: run the real command
line (``pyneural.cli.main``, what ``python -m pyneural`` and the ``pyneural`` script call) and
save the trained parameters, so the test can compare ranks with each other and with one process.

    python cli_train.py OUT_PREFIX train [pyneural train options...]

Writes ``OUT_PREFIX.rank<R>.npy`` (every parameter, flattened and concatenated) on each rank.
The CLI keeps its model to itself, so the model is taken from the one ``Trainer.fit`` call the
train command makes; nothing else of the command is changed.
"""
import sys

import numpy as np

from pyneural import cli
from pyneural.trainer import Trainer

trained = []
_fit = Trainer.fit


def _recording_fit(self, *args, **kwargs):
    result = _fit(self, *args, **kwargs)
    trained.append(self.model)
    return result


def main():
    prefix, argv = sys.argv[1], sys.argv[2:]
    Trainer.fit = _recording_fit
    rc = cli.main(argv)
    if rc:
        return rc
    import pyneural.distributed as dist
    rank = dist.get_world().rank if dist.is_initialized() else 0
    (model,) = trained
    flat = np.concatenate([p.data.reshape(-1) for p in model.parameters()])
    np.save(f"{prefix}.rank{rank}.npy", flat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
