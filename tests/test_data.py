"""Dataset, TensorDataset and DataLoader: batching, seeded order, resume, the prefetch thread."""
import threading
import time

import numpy as np
import pytest

import pyneural as pn
from pyneural.data import DataLoader, Dataset, TensorDataset
from pyneural.tensor import Tensor


def loader_threads():
    return [t for t in threading.enumerate() if t.name == "pyneural-dataloader"]


def make_dataset(n=23):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n, dtype=np.int64)
    return TensorDataset(x, y)


def labels_of(loader):
    """The sample ids (the label column) of every batch of one pass, as a list of lists."""
    return [batch[1].data.tolist() for batch in loader]


class NoPerSampleAccess(TensorDataset):
    def __getitem__(self, index):
        raise AssertionError("TensorDataset batches must come from one gather, not per-sample access")


class SlowBatches(TensorDataset):
    def __init__(self, n, delay):
        super().__init__(np.zeros((n, 2), np.float32))
        self.delay = delay

    def get_batch(self, indices):
        time.sleep(self.delay)
        return super().get_batch(indices)


class FailsAt(TensorDataset):
    def __init__(self, n, bad_batch_start):
        super().__init__(np.arange(n, dtype=np.float32))
        self.bad = bad_batch_start

    def get_batch(self, indices):
        if indices[0] == self.bad:
            raise ValueError(f"broken sample {self.bad}")
        return super().get_batch(indices)


# ---- TensorDataset ----------------------------------------------------------------------------

def test_tensor_dataset_items_and_batches():
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    ds = TensorDataset(Tensor(x), np.arange(5))
    assert len(ds) == 5
    xi, yi = ds[3]
    np.testing.assert_array_equal(xi, [6, 7])
    assert yi == 3
    bx, by = NoPerSampleAccess(x, np.arange(5)).get_batch(np.array([4, 0, 2]))
    np.testing.assert_array_equal(bx, x[[4, 0, 2]])
    np.testing.assert_array_equal(by, [4, 0, 2])
    bx[:] = -1
    assert x.min() == 0, "a batch must not alias the dataset"


def test_tensor_dataset_bad_input():
    with pytest.raises(ValueError, match="at least one"):
        TensorDataset()
    with pytest.raises(ValueError, match=r"same first dimension, got shapes \(5, 2\), \(4,\)"):
        TensorDataset(np.zeros((5, 2)), np.zeros(4))
    with pytest.raises(ValueError, match="scalar"):
        TensorDataset(np.zeros(3), np.float32(1.0))


def test_per_sample_dataset_is_stacked():
    class Squares(Dataset):
        def __len__(self):
            return 7

        def __getitem__(self, i):
            return np.full(2, i, np.float32), i * i

    batches = list(DataLoader(Squares(), batch_size=3, prefetch=0))
    assert [b[0].shape for b in batches] == [(3, 2), (3, 2), (1, 2)]
    assert batches[1][1].data.tolist() == [9, 16, 25]


# ---- batching and order -----------------------------------------------------------------------

@pytest.mark.parametrize("prefetch", [0, 2])
def test_batches_cover_the_dataset_in_order(prefetch):
    loader = DataLoader(make_dataset(23), batch_size=5, prefetch=prefetch)
    assert len(loader) == 5
    batches = list(loader)
    assert all(isinstance(t, Tensor) for b in batches for t in b)
    assert [b[0].shape for b in batches] == [(5, 3)] * 4 + [(3, 3)]
    assert sum(labels_of(loader), []) == list(range(23))
    assert batches[0][0].data.dtype == np.float32 and batches[0][1].data.dtype == np.int64


def test_drop_last():
    loader = DataLoader(make_dataset(23), batch_size=5, drop_last=True)
    assert len(loader) == 4
    assert sum(labels_of(loader), []) == list(range(20))
    assert len(DataLoader(make_dataset(20), batch_size=5, drop_last=True)) == 4


def test_shuffle_is_reproducible_and_new_each_epoch():
    a = DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=7)
    b = DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=7, prefetch=0)
    epochs_a = [sum(labels_of(a), []) for _ in range(3)]
    epochs_b = [sum(labels_of(b), []) for _ in range(3)]
    assert epochs_a == epochs_b
    assert all(sorted(e) == list(range(23)) for e in epochs_a)
    assert epochs_a[0] != epochs_a[1] != epochs_a[2]
    c = DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=8)
    assert sum(labels_of(c), []) != epochs_a[0]
    assert a.epoch == 3


def test_unseeded_shuffle_follows_manual_seed():
    pn.manual_seed(3)
    first = sum(labels_of(DataLoader(make_dataset(), batch_size=4, shuffle=True)), [])
    pn.manual_seed(3)
    again = sum(labels_of(DataLoader(make_dataset(), batch_size=4, shuffle=True)), [])
    assert first == again


def test_sampler_and_collate_fn():
    class EvenIndices:
        def __len__(self):
            return 6

        def order(self, epoch):
            return np.arange(0, 12, 2) + epoch

    loader = DataLoader(make_dataset(), batch_size=4, sampler=EvenIndices())
    assert len(loader) == 2
    assert labels_of(loader) == [[0, 2, 4, 6], [8, 10]]
    assert labels_of(loader) == [[1, 3, 5, 7], [9, 11]]
    collated = list(DataLoader(make_dataset(), batch_size=10, collate_fn=lambda s: [y for _, y in s]))
    assert collated[2] == [20, 21, 22]


# ---- resuming ---------------------------------------------------------------------------------

def test_state_dict_resumes_mid_epoch_exactly():
    reference = DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=11)
    expected = [labels_of(reference) for _ in range(3)]

    loader = DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=11)
    labels_of(loader)
    it = iter(loader)
    consumed = [next(it)[1].data.tolist() for _ in range(2)]
    assert consumed == expected[1][:2]
    state = loader.state_dict()
    assert (state["epoch"], state["batches_done"]) == (1, 2)
    del it

    resumed = DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=999)
    resumed.load_state_dict(state)
    assert labels_of(resumed) == expected[1][2:]
    assert labels_of(resumed) == expected[2]


def test_state_after_last_batch_points_at_next_epoch():
    loader = DataLoader(make_dataset(), batch_size=10, shuffle=True, seed=1)
    for _ in loader:
        state = loader.state_dict()
    assert (state["epoch"], state["batches_done"]) == (1, 0)


def test_abandoned_pass_starts_next_epoch():
    reference = DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=2)
    expected = [labels_of(reference) for _ in range(2)]
    loader = DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=2)
    for _ in loader:
        break
    assert labels_of(loader) == expected[1]


def test_set_epoch():
    reference = DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=2)
    expected = [labels_of(reference) for _ in range(4)]
    loader = DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=2)
    loader.set_epoch(3)
    assert labels_of(loader) == expected[3]


def test_load_state_dict_rejects_a_different_loader():
    state = DataLoader(make_dataset(23), batch_size=4, shuffle=True, seed=1).state_dict()
    with pytest.raises(ValueError, match="epoch_size=23 but this loader has epoch_size=24"):
        DataLoader(make_dataset(24), batch_size=4, shuffle=True).load_state_dict(state)
    with pytest.raises(ValueError, match="shuffle=True but this loader has shuffle=False"):
        DataLoader(make_dataset(23), batch_size=4).load_state_dict(state)
    with pytest.raises(ValueError, match="drop_last"):
        DataLoader(make_dataset(23), batch_size=4, shuffle=True, drop_last=True).load_state_dict(state)
    with pytest.raises(ValueError, match=r"position=24 outside \[0, 23\]"):
        DataLoader(make_dataset(23), batch_size=4, shuffle=True).load_state_dict(dict(state, position=24))


@pytest.mark.parametrize("new_batch", [3, 4, 7])
def test_resume_with_another_batch_size_skips_and_repeats_nothing(new_batch):
    """The position is in samples: a run may resume with another batch size and still see the
    rest of the interrupted epoch exactly once, in the same order."""
    full = sum(labels_of(DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=5)), [])
    loader = DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=5)
    it = iter(loader)
    first = sum([next(it)[1].data.tolist() for _ in range(3)], [])
    state = loader.state_dict()
    assert state["position"] == 12 and state["batches_done"] == 3
    resumed = DataLoader(make_dataset(), batch_size=new_batch, shuffle=True, seed=5)
    resumed.load_state_dict(state)
    rest = labels_of(resumed)
    assert all(len(b) == new_batch for b in rest[:-1])
    assert first + sum(rest, []) == full
    assert resumed.epoch == 1 and resumed.state_dict()["position"] == 0


def test_resume_at_the_end_of_an_epoch_starts_the_next():
    loader = DataLoader(make_dataset(), batch_size=5, shuffle=True, seed=3, drop_last=True)
    state = dict(loader.state_dict(), position=21)  # only a partial batch left, and drop_last
    loader.load_state_dict(state)
    assert loader.epoch == 1
    assert len(labels_of(loader)) == 4


# ---- augmentation inside the loader -----------------------------------------------------------

def images_dataset(n=10):
    x = np.arange(n * 2 * 4 * 4, dtype=np.float32).reshape(n, 2, 4, 4)
    return TensorDataset(x, np.arange(n, dtype=np.int64))


def test_transform_is_seeded_by_position_so_resume_and_workers_agree():
    from pyneural.data.augment import Compose, RandomCrop, RandomHorizontalFlip
    transform = Compose([RandomCrop(4, padding=1), RandomHorizontalFlip()])

    def images(loader):
        return [b[0].data.copy() for b in loader]

    reference = DataLoader(images_dataset(), batch_size=3, shuffle=True, seed=4, transform=transform, prefetch=0)
    expected = images(reference) + images(reference)
    threaded = DataLoader(images_dataset(), batch_size=3, shuffle=True, seed=4, transform=transform,
                          prefetch=3, workers=3)
    got = images(threaded) + images(threaded)
    assert len(got) == len(expected) == 8
    assert all(np.array_equal(a, b) for a, b in zip(got, expected))
    plain = images(DataLoader(images_dataset(), batch_size=3, shuffle=True, seed=4, prefetch=0))
    assert not all(np.array_equal(a, b) for a, b in zip(expected[:4], plain)), "the transform did nothing"
    resumed = DataLoader(images_dataset(), batch_size=3, shuffle=True, seed=4, transform=transform)
    resumed.load_state_dict(dict(reference.state_dict(), epoch=1, position=6, batches_done=2))
    assert all(np.array_equal(a, b) for a, b in zip(images(resumed), expected[6:]))


def test_transform_arguments():
    with pytest.raises(TypeError, match="transform must be callable"):
        DataLoader(images_dataset(), transform=3)
    with pytest.raises(ValueError, match="collate_fn"):
        DataLoader(images_dataset(), transform=lambda x, rng: x, collate_fn=list)


@pytest.mark.parametrize("workers,prefetch", [(1, 1), (2, 2), (3, 5), (4, 2)])
def test_several_workers_deliver_in_order(workers, prefetch):
    before = len(loader_threads())
    loader = DataLoader(make_dataset(), batch_size=2, prefetch=prefetch, workers=workers)
    assert sum(labels_of(loader), []) == list(range(23))
    assert len(loader_threads()) == before


def test_last_delivered_names_the_batch():
    loader = DataLoader(make_dataset(), batch_size=4, shuffle=True, seed=1)
    loader.load_state_dict(dict(loader.state_dict(), position=8))
    it = iter(loader)
    next(it)
    next(it)
    assert loader.last_delivered == (0, 8, 1)


# ---- the prefetch thread ----------------------------------------------------------------------

def test_prefetch_thread_stops_when_breaking_out_early():
    before = len(loader_threads())
    loader = DataLoader(make_dataset(200), batch_size=2, prefetch=3)
    start = time.perf_counter()
    for i, _ in enumerate(loader):
        if i == 0:
            # The worker has filled the queue and is blocked putting the next batch.
            time.sleep(0.1)
            assert len(loader_threads()) == before + 1
        if i == 2:
            break
    assert len(loader_threads()) == before
    assert time.perf_counter() - start < 5


def test_prefetch_thread_stops_after_a_full_pass_and_on_close():
    before = len(loader_threads())
    loader = DataLoader(make_dataset(), batch_size=4)
    list(loader)
    assert len(loader_threads()) == before
    it = iter(loader)
    next(it)
    it.close()
    assert len(loader_threads()) == before
    with pytest.raises(StopIteration):
        next(it)


def test_new_pass_closes_the_previous_one():
    loader = DataLoader(make_dataset(), batch_size=4)
    first = iter(loader)
    next(first)
    second = iter(loader)
    assert len(loader_threads()) <= 1
    with pytest.raises(RuntimeError, match="new pass"):
        next(first)
    next(second)


@pytest.mark.parametrize("prefetch", [0, 2])
def test_worker_exception_reaches_the_caller(prefetch):
    before = len(loader_threads())
    loader = DataLoader(FailsAt(20, bad_batch_start=8), batch_size=4, prefetch=prefetch)
    got = []
    with pytest.raises(ValueError, match="broken sample 8"):
        for batch in loader:
            got.append(batch[0].data.tolist())
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert len(loader_threads()) == before


def test_wait_time_measures_blocking_and_prefetch_hides_it():
    delay, n = 0.03, 6
    sync = DataLoader(SlowBatches(n, delay), batch_size=1, prefetch=0)
    list(sync)
    assert sync.wait_time >= n * delay * 0.9
    overlapped = DataLoader(SlowBatches(n, delay), batch_size=1, prefetch=2)
    for _ in overlapped:
        time.sleep(2 * delay)  # a "step" slower than batch building
    # Only the first batch (nothing prepared yet) should make the caller wait.
    assert overlapped.wait_time < n * delay * 0.6


def test_loader_bad_arguments():
    ds = make_dataset()
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        DataLoader(ds, batch_size=0)
    with pytest.raises(ValueError, match="prefetch"):
        DataLoader(ds, prefetch=-1)
    with pytest.raises(ValueError, match="sampler or shuffle"):
        DataLoader(ds, shuffle=True, sampler=object())
    with pytest.raises(ValueError, match="empty"):
        DataLoader(TensorDataset(np.zeros((0, 2))))
    with pytest.raises(ValueError, match="workers must be an int >= 1, got 0"):
        DataLoader(ds, workers=0)


# ---- onto the GPU on a side stream --------------------------------------------------------------

def test_device_prefetcher_says_why_the_device_is_unavailable(monkeypatch):
    from pyneural.cuda import _backend
    from pyneural.data import DevicePrefetcher
    monkeypatch.setattr(_backend, "unavailable_reason", lambda: "no CuPy here")
    with pytest.raises(RuntimeError, match="cuda:0 is not available: no CuPy here"):
        DevicePrefetcher([], "cuda")
    with pytest.raises(ValueError, match="copies batches to a CUDA device, got cpu"):
        DevicePrefetcher([], "cpu")


def test_device_prefetcher_copies_ahead_and_orders_its_streams(monkeypatch):
    """With a stand-in for CuPy that logs calls: the copy of batch k+1 is enqueued (after the side
    stream waited on the consumer's work so far) before batch k is handed out, the consumer's
    stream waits on batch k's own event first, staging buffers are released only once their copy
    is done, and the loader counts only the batches handed out."""
    import contextlib
    import types
    from pyneural.cuda import _backend
    from pyneural.data import DevicePrefetcher
    log = []

    class Event:
        def __init__(self, name):
            self.name = name

        def synchronize(self):
            log.append(("sync", self.name))

    class Stream:
        def __init__(self, name):
            self.name, self.recorded = name, 0

        def __enter__(self):
            current.append(self)

        def __exit__(self, *exc):
            current.pop()

        def record(self):
            self.recorded += 1
            log.append(("record", f"{self.name}{self.recorded}"))
            return Event(f"{self.name}{self.recorded}")

        def wait_event(self, event):
            log.append((f"{self.name} waits", event.name))

    main, side = Stream("main"), Stream("side")
    current = [main]

    class DeviceArray(np.ndarray):
        def set(self, host, stream):
            assert stream is side and current[-1] is side
            self[...] = host
            log.append(("copy", int(host.flat[0])))

    def new_stream(non_blocking):
        assert non_blocking
        return side

    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, CUDARuntimeError=RuntimeError,
                                    pointerGetAttributes=lambda ptr: types.SimpleNamespace(type=0))
    cuda = types.SimpleNamespace(Stream=new_stream, get_current_stream=lambda: current[-1], runtime=runtime,
                                 Device=lambda index: contextlib.nullcontext(),
                                 alloc_pinned_memory=lambda nbytes: np.empty(nbytes, np.uint8))
    cupy = types.SimpleNamespace(cuda=cuda, empty=lambda shape, dtype: np.empty(shape, dtype).view(DeviceArray))
    monkeypatch.setattr(_backend, "unavailable_reason", lambda: None)
    monkeypatch.setattr(_backend, "cupy", lambda: cupy)
    loader = DataLoader(make_dataset(9), batch_size=3)
    got = []
    for inputs, labels in DevicePrefetcher(loader, "cuda"):
        got.append(labels.data.tolist())
        log.append(("use", int(labels.data[0]), loader.state_dict()["position"]))
    assert got == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]

    def staged(k):  # inputs' first element is 3 * label: batch k copies 9k, then 3k
        return [("record", f"main{k + 1}"), ("side waits", f"main{k + 1}"), ("copy", 9 * k), ("copy", 3 * k),
                ("record", f"side{k + 1}")]
    assert log == (staged(0) + staged(1) + [("main waits", "side1"), ("use", 0, 3)]
                   + staged(2) + [("main waits", "side2"), ("use", 3, 6)]
                   + [("sync", "side1"), ("main waits", "side3"), ("use", 6, 0)]
                   + [("sync", "side2"), ("sync", "side3")]), "the pass ends once its last copies are done"
