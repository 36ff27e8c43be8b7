"""One phase of the N -> M ranks resume test (tests/test_resume.py): train a tiny model with the
DistributedTrainer on 101 samples whose first feature encodes the sample's id, resume from the
newest checkpoint in --dir if there is one, stop after global step --stop-at (or at the end), and
write the ids of the real samples (padding excluded) this rank trained on, per epoch, as JSON.

101 samples and batch 4: no rank count in {1, 2} divides an epoch or its rest evenly, so the
padding and the uneven last step are exercised on every resume.
"""
import argparse
import json

import numpy as np

import pyneural as pn
from pyneural import nn, optim
from pyneural.checkpoint import Checkpointer, SaveEvery, restore_training_state
from pyneural.data import DataLoader, TensorDataset
from pyneural.distributed import DistributedDataParallel, DistributedSampler, init
from pyneural.distributed.training import DistributedTrainer

SAMPLES, BATCH, EPOCHS = 101, 4, 2


class Stop(Exception):
    pass


class StopAt:
    def __init__(self, step):
        self.step = step

    def on_step_end(self, trainer, loss):
        if trainer.global_step == self.step:
            raise Stop


class RecordingTrainer(DistributedTrainer):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.seen = {}

    def train_step(self, inputs, targets):
        real, _ = self._step_weight(len(targets))
        ids = np.rint(inputs.data[:real, 0] * SAMPLES).astype(int).tolist()
        self.seen.setdefault(self._loader.last_delivered.epoch, []).extend(ids)
        return super().train_step(inputs, targets)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--stop-at", type=int, default=None)
    args = parser.parse_args()
    world = init(timeout=30)
    x = np.zeros((SAMPLES, 3), np.float32)
    x[:, 0] = np.arange(SAMPLES) / SAMPLES
    x[:, 1] = 1.0
    data = TensorDataset(x, np.arange(SAMPLES) % 3)
    sampler = DistributedSampler(data, num_replicas=world.size, rank=world.rank, seed=7)
    loader = DataLoader(data, batch_size=BATCH, sampler=sampler)
    pn.manual_seed(0)
    model = DistributedDataParallel(nn.Linear(3, 3))
    trainer = RecordingTrainer(model, optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    checkpointer = Checkpointer(args.dir, keep=2)
    resumed_from = None
    if checkpointer.latest() is not None:
        state = restore_training_state(checkpointer.load(), trainer, loader)
        resumed_from = {"step": state["step"], "epoch": state["epoch"], "position": state["loader"]["position"],
                        "ranks": state["loader"]["ranks"]}
    if world.rank == 0:
        trainer.callbacks.append(SaveEvery(checkpointer, loader, every=1))
    if args.stop_at is not None:
        trainer.callbacks.append(StopAt(args.stop_at))
    try:
        trainer.fit(loader, EPOCHS)
    except Stop:
        pass
    with open(f"{args.out}.{world.rank}.json", "w") as f:
        json.dump({"seen": trainer.seen, "step": trainer.global_step, "resumed_from": resumed_from,
                   "ranks": world.size}, f)


if __name__ == "__main__":
    main()
