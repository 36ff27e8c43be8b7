"""The DataLoader as PyTorch users know it: default_collate, PyTorch's arguments and their checks,
samplers and batch samplers (and what resumes with them), worker threads (worker_init_fn,
prefetch_factor, timeout), pin_memory and the DevicePrefetcher on the CUDA device."""
import collections
import threading
import time

import numpy as np
import pytest

import pyneural as pn
from pyneural.data import (BatchSampler, DataLoader, Dataset, DevicePrefetcher, RandomSampler, SequentialSampler,
                           SubsetRandomSampler, TensorDataset, default_collate, default_convert)
from pyneural.tensor import Tensor

Point = collections.namedtuple("Point", "x y")


class ImagesAndLabels:
    """A map-style dataset written the PyTorch way: no base class, ``(Tensor, int)`` samples."""

    def __init__(self, n=10, shape=(2, 3, 3)):
        self.images = np.arange(n * int(np.prod(shape)), dtype=np.float32).reshape((n,) + shape)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return Tensor(self.images[i]), i


def labels(batches):
    return [b[1].data.tolist() for b in batches]


def nested_sample(i):
    return {"image": np.full((2, 2), i, np.float32), "id": i, "weight": 0.5 * i, "keep": i % 2 == 0,
            "name": f"s{i}", "pair": (np.int32(i), [i, -i]), "point": Point(np.float64(i), i + 1)}


# ---- default_collate ----------------------------------------------------------------------------

def test_default_collate_kinds_and_structure():
    batch = default_collate([nested_sample(i) for i in range(3)])
    assert list(batch) == ["image", "id", "weight", "keep", "name", "pair", "point"]
    assert batch["image"].shape == (3, 2, 2) and batch["image"].dtype == np.float32
    np.testing.assert_array_equal(batch["image"].data[:, 0, 0], [0, 1, 2])
    assert batch["id"].dtype == np.int64 and batch["id"].data.tolist() == [0, 1, 2]
    assert batch["weight"].dtype == np.float64 and batch["weight"].data.tolist() == [0.0, 0.5, 1.0]
    assert batch["keep"].dtype == np.bool_ and batch["keep"].data.tolist() == [True, False, True]
    assert batch["name"] == ["s0", "s1", "s2"]
    assert isinstance(batch["pair"], list), "a tuple collates to a list, as in PyTorch"
    assert batch["pair"][0].dtype == np.int32
    assert [t.data.tolist() for t in batch["pair"][1]] == [[0, 1, 2], [0, -1, -2]]
    assert type(batch["point"]) is Point and batch["point"].x.dtype == np.float64


def test_default_collate_of_tensor_int_samples_and_its_errors():
    images, ids = default_collate([ImagesAndLabels()[i] for i in (4, 1)])
    assert isinstance(images, Tensor) and images.shape == (2, 2, 3, 3)
    np.testing.assert_array_equal(images.data, ImagesAndLabels().images[[4, 1]])
    assert ids.dtype == np.int64 and ids.data.tolist() == [4, 1]
    with pytest.raises(RuntimeError, match="each element in list of batch should be of equal size"):
        default_collate([[1, 2], [3]])
    with pytest.raises(RuntimeError, match=r"equal size, but got \[2\] at entry 0 and \[3\] at entry 1"):
        default_collate([np.zeros(2), np.zeros(3)])
    with pytest.raises(TypeError, match="found <class 'object'>"):
        default_collate([object()])
    with pytest.raises(TypeError, match="dtype <U1"):
        default_collate([np.array(["a"])])
    converted = default_convert((np.float32(2), [np.zeros(2), 3], "s"))
    assert isinstance(converted, list) and isinstance(converted[0], Tensor) and converted[0].dtype == np.float32
    assert isinstance(converted[1][0], Tensor) and converted[1][1] == 3 and converted[2] == "s"


def _to_torch(torch, sample):
    if isinstance(sample, Tensor):
        return torch.from_numpy(sample.data.copy())
    if isinstance(sample, dict):
        return {k: _to_torch(torch, v) for k, v in sample.items()}
    if isinstance(sample, tuple) and hasattr(sample, "_fields"):
        return type(sample)(*(_to_torch(torch, v) for v in sample))
    if isinstance(sample, (tuple, list)):
        return type(sample)(_to_torch(torch, v) for v in sample)
    return sample


def assert_like_torch(ours, theirs, torch, path="batch"):
    """Same structure, container types, dtypes and values as PyTorch's batch."""
    if isinstance(theirs, torch.Tensor):
        assert isinstance(ours, Tensor), f"{path}: {type(ours).__name__} where PyTorch has a tensor"
        assert str(theirs.dtype) == f"torch.{ours.dtype}", f"{path}: {ours.dtype} vs {theirs.dtype}"
        np.testing.assert_array_equal(ours.data, theirs.numpy(), err_msg=path)
        return
    assert type(ours) is type(theirs), f"{path}: {type(ours).__name__} vs {type(theirs).__name__}"
    if isinstance(theirs, dict):
        assert list(ours) == list(theirs), path
        for k in theirs:
            assert_like_torch(ours[k], theirs[k], torch, f"{path}[{k!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_like_torch(a, b, torch, f"{path}[{i}]")
    else:
        assert ours == theirs, path


def test_default_collate_matches_pytorch():
    torch = pytest.importorskip("torch")
    from torch.utils.data import default_collate as torch_collate
    from torch.utils.data import default_convert as torch_convert
    samples = [nested_sample(i) for i in range(4)]
    assert_like_torch(default_collate(samples), torch_collate(samples), torch)
    pairs = [ImagesAndLabels()[i] for i in range(3)]
    assert_like_torch(default_collate(pairs), torch_collate([_to_torch(torch, p) for p in pairs]), torch)
    assert_like_torch(default_convert(samples[1]), torch_convert(samples[1]), torch)


# ---- batches as PyTorch gives them --------------------------------------------------------------

def test_a_pytorch_style_dataset_gives_stacked_tensor_and_int64_batches():
    batches = list(DataLoader(ImagesAndLabels(10), batch_size=4))
    assert [type(b) for b in batches] == [list] * 3
    assert [b[0].shape for b in batches] == [(4, 2, 3, 3), (4, 2, 3, 3), (2, 2, 3, 3)]
    assert labels(batches) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[0][1].dtype == np.int64


@pytest.mark.parametrize("kwargs", [dict(batch_size=4), dict(batch_size=3, drop_last=True), dict(batch_size=None),
                                    dict(batch_sampler=[[3, 1], [0], [2, 4, 5]]),
                                    dict(batch_size=4, num_workers=2)])
def test_same_batches_as_torch(kwargs):
    torch = pytest.importorskip("torch")
    import torch.utils.data as tud
    n = 10
    data = [(np.arange(3, dtype=np.float32) + i, i, 0.25 * i) for i in range(n)]
    ours = list(DataLoader(data, **kwargs))
    theirs = list(tud.DataLoader(data, **kwargs))
    assert len(ours) == len(theirs) == len(DataLoader(data, **kwargs))
    for a, b in zip(ours, theirs):
        assert_like_torch(a, b, torch)


def test_sequential_sampler_batches_match_torch_with_a_tensor_dataset():
    torch = pytest.importorskip("torch")
    import torch.utils.data as tud
    x = np.random.default_rng(0).standard_normal((11, 3)).astype(np.float32)
    y = np.arange(11)
    ours = DataLoader(TensorDataset(x, y), sampler=SequentialSampler(range(11)), batch_size=4)
    theirs = tud.DataLoader(tud.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                            sampler=tud.SequentialSampler(range(11)), batch_size=4)
    for (a, b), (ta, tb) in zip(ours, theirs):
        np.testing.assert_array_equal(a.data, ta.numpy())
        np.testing.assert_array_equal(b.data, tb.numpy())


BAD_ARGUMENTS = [
    (dict(batch_sampler=[[0]], batch_size=2), "mutually exclusive with batch_size, shuffle, sampler, and drop_last"),
    (dict(batch_sampler=[[0]], shuffle=True), "batch_sampler option is mutually exclusive"),
    (dict(batch_sampler=[[0]], sampler=[0]), "batch_sampler option is mutually exclusive"),
    (dict(batch_sampler=[[0]], drop_last=True), "batch_sampler option is mutually exclusive"),
    (dict(batch_size=None, drop_last=True), "batch_size=None option disables auto-batching"),
    (dict(sampler=[0, 1], shuffle=True), "sampler option is mutually exclusive with shuffle"),
    (dict(num_workers=-1), "num_workers option should be non-negative"),
    (dict(prefetch_factor=2), "prefetch_factor option could only be specified"),
    (dict(persistent_workers=True), "persistent_workers option needs num_workers > 0"),
    (dict(timeout=-1, num_workers=1), "timeout option should be non-negative"),
]


@pytest.mark.parametrize("kwargs,message", BAD_ARGUMENTS)
def test_arguments_checked_as_pytorch_checks_them(kwargs, message):
    data = list(range(6))
    with pytest.raises(ValueError, match=message):
        DataLoader(data, **kwargs)
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError):
        torch.utils.data.DataLoader(data, **kwargs)


def test_pyneural_argument_checks():
    data = list(range(6))
    with pytest.raises(ValueError, match="timeout applies to batches built by worker threads"):
        DataLoader(data, timeout=1)
    with pytest.raises(ValueError, match="give seed or generator, not both"):
        DataLoader(data, seed=1, generator=2)
    with pytest.raises(ValueError, match="num_workers=2 and workers=3"):
        DataLoader(data, num_workers=2, workers=3)
    with pytest.raises(ValueError, match="prefetch_factor .* or the older prefetch"):
        DataLoader(data, num_workers=1, prefetch_factor=2, prefetch=2)
    with pytest.raises(TypeError, match="sampler must be iterable with a len"):
        DataLoader(data, sampler=iter([0, 1]))
    with pytest.raises(TypeError, match="generator must be an int seed"):
        DataLoader(data, shuffle=True, generator="seven")
    with pytest.raises(TypeError, match="worker_init_fn must be callable"):
        DataLoader(data, num_workers=1, worker_init_fn=3)
    assert DataLoader(data, workers=2).num_workers == 2
    loader = DataLoader(data, num_workers=3)
    assert (loader.workers, loader.prefetch_factor, loader.prefetch) == (3, 2, 6)


# ---- samplers -----------------------------------------------------------------------------------

def test_random_sampler_orders():
    data = range(7)
    a = RandomSampler(data, generator=np.random.default_rng(5))
    b = RandomSampler(data, generator=np.random.default_rng(5))
    first, second = list(a), list(a)
    assert first == list(b) and second == list(b), "same generator seed, same sequence of orders"
    assert sorted(first) == sorted(second) == list(range(7)) and first != second
    assert a.order(1).tolist() == second, "order(epoch) is what the epoch's iteration gives"
    assert a.order(0).tolist() == np.random.default_rng([a.seed, 0]).permutation(7).tolist()
    long = RandomSampler(data, num_samples=17, seed=3).order(0)
    assert len(long) == 17 and all(sorted(long[i:i + 7]) == list(range(7)) for i in (0, 7))
    drawn = RandomSampler(data, replacement=True, num_samples=50, seed=3).order(0)
    assert len(drawn) == 50 and drawn.min() >= 0 and drawn.max() < 7 and len(set(drawn.tolist())) < 50
    with pytest.raises(ValueError, match="num_samples should be a positive integer"):
        RandomSampler(data, num_samples=0)
    with pytest.raises(TypeError, match="replacement should be a boolean"):
        RandomSampler(data, replacement=1)


def test_subset_and_batch_samplers():
    subset = SubsetRandomSampler([9, 4, 7, 1], seed=2)
    assert sorted(subset.order(0).tolist()) == [1, 4, 7, 9] and len(subset) == 4
    assert subset.order(0).tolist() != subset.order(1).tolist() or subset.order(2).tolist() != subset.order(0).tolist()
    assert list(BatchSampler(range(7), 3, drop_last=False)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(BatchSampler(range(7), 3, drop_last=True)) == [[0, 1, 2], [3, 4, 5]]
    assert len(BatchSampler(range(7), 3, False)) == 3 and len(BatchSampler(range(7), 3, True)) == 2
    with pytest.raises(ValueError, match="batch_size should be a positive integer"):
        BatchSampler(range(7), 0, False)
    torch = pytest.importorskip("torch")
    assert list(BatchSampler(range(11), 4, False)) == list(torch.utils.data.BatchSampler(range(11), 4, False))


def test_shuffle_is_the_random_sampler_order_and_generator_seeds_it():
    loader = DataLoader(list(range(9)), batch_size=4, shuffle=True, seed=13)
    assert isinstance(loader.sampler, RandomSampler)
    assert sum((b.data.tolist() for b in loader), []) == np.random.default_rng([13, 0]).permutation(9).tolist()
    a = DataLoader(list(range(9)), shuffle=True, generator=np.random.default_rng(4))
    b = DataLoader(list(range(9)), shuffle=True, generator=np.random.default_rng(4))
    assert a.seed == b.seed and a.order(0).tolist() == b.order(0).tolist()
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(21)
    assert DataLoader(list(range(9)), shuffle=True, generator=g).seed == 21


# ---- what resumes with a sampler ----------------------------------------------------------------

def _resume_matches(make_loader, consumed=2):
    reference = make_loader()
    labels(reference)
    expected = labels(reference)  # epoch 1
    loader = make_loader()
    labels(loader)
    it = iter(loader)
    first = [next(it)[1].data.tolist() for _ in range(consumed)]
    state = loader.state_dict()
    del it
    resumed = make_loader()
    resumed.load_state_dict(state)
    return first + labels(resumed) == expected


@pytest.mark.parametrize("make", [
    lambda ds: DataLoader(ds, batch_size=3, sampler=RandomSampler(ds, seed=4)),
    lambda ds: DataLoader(ds, batch_sampler=BatchSampler(RandomSampler(ds, seed=4), 3, drop_last=True)),
    lambda ds: DataLoader(ds, batch_size=3, sampler=SubsetRandomSampler(range(2, 12), seed=4), num_workers=2),
], ids=["random-sampler", "batch-sampler", "subset-workers"])
def test_seeded_samplers_resume_exactly(make):
    ds = TensorDataset(np.zeros((14, 1), np.float32), np.arange(14))
    assert _resume_matches(lambda: make(ds))


def test_user_samplers_resume_when_their_iteration_repeats():
    ds = TensorDataset(np.zeros((9, 1), np.float32), np.arange(9))

    class EpochReversed:
        """A torch-style sampler: iterable with len, told the epoch through set_epoch."""

        def __init__(self):
            self.epoch = None

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __len__(self):
            return 9

        def __iter__(self):
            order = list(range(9))
            return iter(order[::-1] if self.epoch % 2 else order)

    sampler = EpochReversed()
    assert _resume_matches(lambda: DataLoader(ds, batch_size=2, sampler=sampler))
    assert labels(DataLoader(ds, batch_size=4, sampler=sampler))[0] == [0, 1, 2, 3] and sampler.epoch == 0
    batches = [[8, 0], [3], [5, 6, 7], [1, 2]]
    assert _resume_matches(lambda: DataLoader(ds, batch_sampler=batches), consumed=1)
    loader = DataLoader(ds, batch_sampler=batches)
    assert labels(loader) == batches and len(loader) == 4 and loader.batch_size is None


def test_a_sampler_that_disagrees_with_its_len_is_refused():
    class Liar:
        def __len__(self):
            return 5

        def __iter__(self):
            return iter(range(3))

    with pytest.raises(RuntimeError, match="sampler yielded 3 items but its len\\(\\) is 5"):
        list(DataLoader(list(range(6)), sampler=Liar()))


# ---- worker threads -------------------------------------------------------------------------------

class CountingBatches(TensorDataset):
    def __init__(self, n, delay=0.0):
        super().__init__(np.arange(n, dtype=np.float32))
        self.built, self.delay, self.lock = 0, delay, threading.Lock()

    def get_batch(self, indices):
        time.sleep(self.delay)
        with self.lock:
            self.built += 1
        return super().get_batch(indices)


def test_num_workers_zero_loads_in_the_calling_thread():
    seen = []

    class Where(Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            seen.append(threading.current_thread().name)
            return i

    list(DataLoader(Where(), batch_size=2))
    assert set(seen) == {threading.current_thread().name}
    list(DataLoader(Where(), batch_size=2, num_workers=2))
    assert "pyneural-dataloader" in seen


def test_prefetch_factor_bounds_the_batches_built_ahead():
    data = CountingBatches(200)
    loader = DataLoader(data, batch_size=1, num_workers=2, prefetch_factor=3)
    it = iter(loader)
    bound = 2 * (3 + 1)  # each worker: a full queue, and one more batch waiting to be put
    deadline = time.perf_counter() + 5
    while data.built < bound and time.perf_counter() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    assert data.built == bound
    assert [next(it)[0].data.tolist() for _ in range(3)] == [[0.0], [1.0], [2.0]]
    it.close()


def test_worker_init_fn_runs_in_each_worker_once_per_pass_or_once_when_persistent():
    calls = []

    def init(worker_id):
        calls.append((worker_id, threading.current_thread().name))

    loader = DataLoader(list(range(12)), batch_size=2, num_workers=3, worker_init_fn=init)
    list(loader)
    list(loader)
    assert sorted(calls) == sorted([(w, "pyneural-dataloader") for w in range(3)] * 2)
    calls.clear()
    persistent = DataLoader(list(range(12)), batch_size=2, num_workers=3, worker_init_fn=init,
                            persistent_workers=True)
    list(persistent)
    list(persistent)
    assert sorted(w for w, _ in calls) == [0, 1, 2]


def test_timeout_raises_when_a_worker_batch_is_late():
    loader = DataLoader(CountingBatches(4, delay=0.5), batch_size=1, num_workers=1, timeout=0.1)
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="DataLoader timed out after 0.1 seconds"):
        next(iter(loader))
    assert time.perf_counter() - start < 2
    quick = DataLoader(CountingBatches(4, delay=0.01), batch_size=1, num_workers=1, timeout=2)
    assert len(list(quick)) == 4


def test_worker_failure_in_a_per_sample_dataset_reaches_the_caller():
    class Broken(Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            if i == 4:
                raise KeyError(f"sample {i} is missing")
            return i

    with pytest.raises(KeyError, match="sample 4 is missing"):
        list(DataLoader(Broken(), batch_size=2, num_workers=2))


# ---- pinned memory and the device prefetcher ------------------------------------------------------

def test_pin_memory_without_an_accelerator_warns_like_pytorch(monkeypatch):
    from pyneural.data import loader as loader_module
    monkeypatch.setattr(loader_module, "pinning_backend", lambda: None)
    with pytest.warns(UserWarning, match="no accelerator is found"):
        loader = DataLoader(list(range(4)), batch_size=2, pin_memory=True)
    assert [b.data.tolist() for b in loader] == [[0, 1], [2, 3]]


@pytest.mark.cuda
def test_pin_memory_gives_page_locked_batches(cuda_xp):
    from pyneural.backend import cuda as cuda_backend
    x = np.random.default_rng(1).standard_normal((10, 3)).astype(np.float32)
    plain = list(DataLoader(TensorDataset(x, np.arange(10)), batch_size=4))
    for num_workers in (0, 2):
        pinned = list(DataLoader(TensorDataset(x, np.arange(10)), batch_size=4, pin_memory=True,
                                 num_workers=num_workers))
        assert all(cuda_backend.is_pinned(t.data) for batch in pinned for t in batch)
        assert all(np.array_equal(a.data, b.data) for pa, pb in zip(plain, pinned) for a, b in zip(pa, pb))
    assert not any(cuda_backend.is_pinned(t.data) for batch in plain for t in batch)
    per_sample = next(iter(DataLoader(ImagesAndLabels(), batch_size=3, pin_memory=True)))
    assert isinstance(per_sample, list) and all(cuda_backend.is_pinned(t.data) for t in per_sample)


@pytest.mark.cuda
@pytest.mark.parametrize("pin_memory", [False, True])
def test_device_prefetcher_yields_the_loader_batches_on_the_device(cuda_xp, pin_memory):
    x = np.random.default_rng(2).standard_normal((11, 2, 3)).astype(np.float32)
    loader = DataLoader(TensorDataset(x, np.arange(11)), batch_size=4, shuffle=True, seed=3, pin_memory=pin_memory,
                        num_workers=1)
    reference = list(DataLoader(TensorDataset(x, np.arange(11)), batch_size=4, shuffle=True, seed=3))
    prefetcher = DevicePrefetcher(loader, "cuda")
    assert len(prefetcher) == 3
    got, positions = [], []
    for inputs, targets in prefetcher:
        assert inputs.device == "cuda" and targets.device == "cuda"
        got.append((inputs.cpu().numpy(), targets.cpu().numpy()))
        positions.append((loader.state_dict()["position"], loader.last_delivered.index))
    assert all(np.array_equal(a, r[0].data) and np.array_equal(b, r[1].data) for (a, b), r in zip(got, reference))
    assert positions == [(4, 0), (8, 1), (0, 2)], "the batch fetched ahead is not counted as delivered"
    structured = next(iter(DevicePrefetcher(DataLoader(ImagesAndLabels(), batch_size=2), "cuda")))
    assert isinstance(structured, list) and structured[0].device == "cuda" and structured[1].dtype == np.int64


@pytest.mark.cuda
def test_device_prefetcher_wait_time_is_measured_as_on_the_cpu(cuda_xp):
    delay, n = 0.04, 6
    blocking = DevicePrefetcher(DataLoader(CountingBatches(n, delay), batch_size=1), "cuda")
    list(blocking)
    assert blocking.wait_time >= n * delay * 0.9, "every batch is built while the caller waits"
    overlapped = DevicePrefetcher(DataLoader(CountingBatches(n, delay), batch_size=1, num_workers=1), "cuda")
    for _ in overlapped:
        time.sleep(3 * delay)  # a "step" slower than batch building
    # only the first batch (nothing prepared yet) should make the caller wait; relative to the
    # blocking run, so that a loaded machine slows both alike
    assert 0 < overlapped.wait_time < 0.5 * blocking.wait_time
    assert overlapped.total_wait_time == overlapped.wait_time


@pytest.mark.cuda
def test_trainer_on_cuda_prefetches_and_matches_the_cpu(cuda_xp, monkeypatch):
    from pyneural import nn, optim
    from pyneural.data import device as device_module
    from pyneural.trainer import Trainer
    staged = []
    original = device_module.DevicePrefetcher.stage
    monkeypatch.setattr(device_module.DevicePrefetcher, "stage",
                        lambda self, batch: staged.append(1) or original(self, batch))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((24, 5)).astype(np.float32), rng.integers(0, 3, 24)

    class Positions:
        def __init__(self, loader):
            self.loader, self.seen = loader, []

        def on_step_end(self, trainer, loss):
            self.seen.append(self.loader.state_dict()["position"])

    def run(device):
        pn.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).to(device)
        loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, seed=1, pin_memory=device == "cuda")
        positions = Positions(loader)
        trainer = Trainer(model, optim.SGD(model.parameters(), lr=0.1), callbacks=[positions], device=device)
        stats = trainer.fit(loader, epochs=2, eval_loader=DataLoader(TensorDataset(x, y), batch_size=12))
        return [s.train_loss for s in stats] + [s.test_loss for s in stats], positions.seen

    cpu_losses, cpu_positions = run("cpu")
    assert not staged
    gpu_losses, gpu_positions = run("cuda")
    assert len(staged) == 2 * (3 + 2), "every training and evaluation batch went through the prefetcher"
    np.testing.assert_allclose(gpu_losses, cpu_losses, rtol=1e-4)
    assert gpu_positions == cpu_positions == [8, 16, 0] * 2
