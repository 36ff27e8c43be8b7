"""Per-sample transforms (pyneural.data.transforms) against hand-written numpy references with
torchvision's semantics, and their seeding inside the DataLoader."""
import numpy as np
import pytest

import pyneural as pn
from pyneural.data import DataLoader, Dataset
from pyneural.data import transforms as T
from pyneural.tensor import Tensor


def padded_reference(img, left, top, right, bottom, mode, fill=0):
    """``img`` (H, W) padded by explicit index maps (no np.pad): constant, edge, reflect (mirror
    without the edge pixel) and symmetric (mirror with it), as torchvision defines them."""
    h, w = img.shape

    def source(i, n):
        if mode == "edge":
            return min(max(i, 0), n - 1)
        if mode == "reflect":
            period = 2 * (n - 1)
            i = abs(i) % period
            return period - i if i >= n else i
        if mode == "symmetric":
            period = 2 * n
            i = i % period
            return period - 1 - i if i >= n else i
        return i if 0 <= i < n else None

    out = np.empty((h + top + bottom, w + left + right), dtype=img.dtype)
    for y in range(out.shape[0]):
        for x in range(out.shape[1]):
            sy, sx = source(y - top, h), source(x - left, w)
            out[y, x] = fill if sy is None or sx is None else img[sy, sx]
    return out


def draws(key, *highs):
    """The integers a transform draws within ``seeded_draws(key)``: one per ``high``."""
    rng = np.random.default_rng(key)
    return [int(rng.integers(0, high)) for high in highs]


# ---- ToTensor and Normalize -----------------------------------------------------------------------

def test_to_tensor_hwc_uint8_to_chw_float_in_unit_range(rng):
    img = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    out = T.ToTensor()(img)
    assert isinstance(out, Tensor) and out.shape == (3, 5, 4) and out.dtype == np.float32
    reference = np.stack([img[:, :, c] for c in range(3)]).astype(np.float64) / 255.0
    np.testing.assert_allclose(out.data, reference, rtol=1e-6, atol=0)
    gray = T.ToTensor()(img[:, :, 0])
    assert gray.shape == (1, 5, 4)
    np.testing.assert_allclose(gray.data[0], img[:, :, 0] / 255.0, rtol=1e-6)
    floats = rng.standard_normal((2, 3, 2))
    kept = T.ToTensor()(floats)  # not uint8: transposed, not scaled, dtype kept (torchvision's rule)
    assert kept.dtype == np.float64
    np.testing.assert_array_equal(kept.data, floats.transpose(2, 0, 1))
    with pytest.raises(ValueError, match="pic should be 2/3 dimensional. Got 4 dimensions"):
        T.ToTensor()(np.zeros((1, 2, 2, 3), np.uint8))
    with pytest.raises(TypeError, match="got a pn.Tensor"):
        T.ToTensor()(out)


def test_normalize_against_float64_reference(rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    mean, std = (0.1, -0.2, 0.3), (0.5, 2.0, 1.5)
    out = T.Normalize(mean, std)(Tensor(x))
    reference = (x.astype(np.float64) - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, reference, rtol=1e-6, atol=1e-6)
    batch = T.Normalize(0.5, 0.25)(Tensor(x[None]))
    np.testing.assert_allclose(batch.data[0], (x.astype(np.float64) - 0.5) / 0.25, rtol=1e-6, atol=1e-6)
    original = Tensor(x.copy())
    assert T.Normalize(mean, std, inplace=True)(original) is original
    np.testing.assert_allclose(original.data, reference, rtol=1e-6, atol=1e-6)


def test_normalize_errors():
    with pytest.raises(ValueError, match="std evaluated to zero"):
        T.Normalize((0.0,), (0.0,))(Tensor(np.zeros((1, 2, 2), np.float32)))
    with pytest.raises(TypeError, match="float tensor"):
        T.Normalize((0.0,), (1.0,))(Tensor(np.zeros((1, 2, 2), np.uint8)))
    with pytest.raises(ValueError, match=r"\(\.\.\., C, H, W\), got \(2, 2\)"):
        T.Normalize((0.0,), (1.0,))(Tensor(np.zeros((2, 2), np.float32)))
    with pytest.raises(ValueError, match="mean has 2 values for an image of 3 channels"):
        T.Normalize((0.0, 1.0), (1.0,))(Tensor(np.zeros((3, 2, 2), np.float32)))
    with pytest.raises(TypeError, match="img should be a pn.Tensor image"):
        T.Normalize((0.0,), (1.0,))(np.zeros((1, 2, 2), np.float32))


# ---- RandomCrop -----------------------------------------------------------------------------------

@pytest.mark.parametrize("padding,sides", [(None, (0, 0, 0, 0)), (2, (2, 2, 2, 2)), ((1, 3), (1, 3, 1, 3)),
                                           ((1, 0, 2, 3), (1, 0, 2, 3))])
@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "symmetric"])
def test_random_crop_matches_the_padded_reference(rng, padding, sides, mode):
    img = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    crop = T.RandomCrop((4, 5), padding=padding, padding_mode=mode, fill=7)
    padded = padded_reference(img, *sides, mode, fill=7)
    for key in ([1, 2], [3, 4], [5, 6]):
        top, left = draws(key, padded.shape[0] - 4 + 1, padded.shape[1] - 5 + 1)
        expected = padded[top:top + 4, left:left + 5]
        with T.seeded_draws(key):
            as_array = crop(img[:, :, None].repeat(2, axis=2))       # HWC, like a PIL image
        with T.seeded_draws(key):
            as_tensor = crop(Tensor(np.stack([img, img]).astype(np.float32)))  # CHW
        assert as_array.shape == (4, 5, 2) and isinstance(as_array, np.ndarray)
        np.testing.assert_array_equal(as_array[:, :, 1], expected)
        assert isinstance(as_tensor, Tensor) and as_tensor.shape == (2, 4, 5)
        np.testing.assert_array_equal(as_tensor.data[0], expected)


def test_random_crop_reaches_every_offset_and_copies():
    img = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    crop = T.RandomCrop(3, padding=1)
    seen = set()
    with T.seeded_draws([9]):
        for _ in range(400):
            out = crop(Tensor(img)).data
            seen.add(int(out[0, 1, 1]))  # img[top, left]: one value per offset of the padded image
    assert seen == set(range(16)), "every (top, left) of the 4x4 range occurs"
    same = T.RandomCrop(4)
    out = same(Tensor(img))
    out.data[...] = -1
    assert img.min() == 0, "a crop never aliases its input"


def test_random_crop_pad_if_needed_and_errors():
    img = np.ones((2, 3), np.uint8)
    with T.seeded_draws([0]):
        out = T.RandomCrop((4, 5), pad_if_needed=True)(img)
    assert out.shape == (4, 5) and out.sum() == 6, "padded by the shortfall on both sides, then cropped"
    with pytest.raises(ValueError, match=r"required crop size \(4, 5\) is larger than input image size \(2, 3\)"):
        T.RandomCrop((4, 5))(img)
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        T.RandomCrop(2, padding_mode="wrap")
    with pytest.raises(ValueError, match="padding must be an int >= 0 or a sequence of 2 or 4"):
        T.RandomCrop(2, padding=(1, 2, 3))
    with pytest.raises(TypeError, match="numpy image"):
        T.RandomCrop(2)([[1, 2], [3, 4]])


# ---- flips, Compose, Lambda -----------------------------------------------------------------------

def test_random_horizontal_flip(rng):
    img = rng.integers(0, 256, (3, 4, 2), dtype=np.uint8)
    chw = Tensor(img.transpose(2, 0, 1).astype(np.float32))
    with T.seeded_draws([1]):
        assert T.RandomHorizontalFlip(p=0.0)(img) is img
        np.testing.assert_array_equal(T.RandomHorizontalFlip(p=1.0)(img), img[:, ::-1, :])
        np.testing.assert_array_equal(T.RandomHorizontalFlip(p=1.0)(chw).data, chw.data[:, :, ::-1])
    flip = T.RandomHorizontalFlip(p=0.3)
    with T.seeded_draws([2]):
        flips = sum(flip(chw) is not chw for _ in range(4000))
    reference = np.random.default_rng([2]).random(4000) < 0.3
    assert flips == int(reference.sum())
    with pytest.raises(ValueError, match="probability"):
        T.RandomHorizontalFlip(p=1.5)


def test_compose_and_lambda(rng):
    img = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    pipeline = T.Compose([T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3), T.Lambda(lambda t: t * 2)])
    out = pipeline(img)
    np.testing.assert_allclose(out.data, 2 * (img.transpose(2, 0, 1) / 255.0 - 0.5) / 0.5, rtol=1e-5, atol=1e-6)
    assert "ToTensor()" in repr(pipeline)
    with pytest.raises(TypeError, match="Argument lambd should be callable"):
        T.Lambda(3)
    with pytest.raises(TypeError, match="transform 1 is a int"):
        T.Compose([T.ToTensor(), 1])


# ---- seeding inside the DataLoader ------------------------------------------------------------------

class AugmentedImages(Dataset):
    """A torchvision-style dataset: HWC uint8 images through a transform, with an int label."""

    def __init__(self, n=12):
        self.images = np.random.default_rng(0).integers(0, 256, (n, 6, 6, 3), dtype=np.uint8)
        self.transform = T.Compose([T.RandomCrop(6, padding=2), T.RandomHorizontalFlip(), T.ToTensor()])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), i


def images(loader, passes=1):
    return [b[0].data.copy() for _ in range(passes) for b in loader]


def test_loader_seeds_each_sample_so_workers_and_resume_agree():
    reference = images(DataLoader(AugmentedImages(), batch_size=4, shuffle=True, seed=3), passes=2)
    threaded = images(DataLoader(AugmentedImages(), batch_size=4, shuffle=True, seed=3, num_workers=3), passes=2)
    assert len(reference) == 6 and all(np.array_equal(a, b) for a, b in zip(reference, threaded))
    assert not np.array_equal(reference[0], images(DataLoader(AugmentedImages(), batch_size=4, shuffle=True,
                                                              seed=4))[0])
    resumed = DataLoader(AugmentedImages(), batch_size=4, shuffle=True, seed=3)
    resumed.load_state_dict(dict(resumed.state_dict(), epoch=1, position=4, batches_done=1))
    assert all(np.array_equal(a, b) for a, b in zip(images(resumed), reference[4:]))
    in_order = DataLoader(AugmentedImages(), batch_size=4, seed=3)
    epoch0, epoch1 = images(in_order), images(in_order)
    assert not any(np.array_equal(a, b) for a, b in zip(epoch0, epoch1)), "each epoch augments anew"


def test_outside_a_loader_transforms_draw_from_the_global_generator():
    img = np.arange(36, dtype=np.uint8).reshape(6, 6)
    crop = T.RandomCrop(3)
    pn.manual_seed(5)
    first = [crop(img) for _ in range(5)]
    pn.manual_seed(5)
    again = [crop(img) for _ in range(5)]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert len({a.tobytes() for a in first}) > 1


@pytest.mark.cuda
def test_transforms_on_device_tensors(cuda_xp):
    x = np.random.default_rng(3).standard_normal((2, 5, 5)).astype(np.float32)
    on_device = Tensor(x).to("cuda")
    normalized = T.Normalize((0.5, -1.0), (2.0, 0.5))(on_device)
    assert normalized.device == "cuda"
    np.testing.assert_allclose(normalized.cpu().numpy(), (x - np.array([0.5, -1.0])[:, None, None])
                               / np.array([2.0, 0.5])[:, None, None], rtol=1e-6, atol=1e-6)
    with T.seeded_draws([4]):
        cropped = T.RandomCrop(3, padding=1, padding_mode="reflect")(on_device)
        flipped = T.RandomHorizontalFlip(p=1.0)(on_device)
    top, left = draws([4], 5, 5)
    expected = padded_reference(x[1], 1, 1, 1, 1, "reflect")[top:top + 3, left:left + 3]
    assert cropped.device == "cuda"
    np.testing.assert_array_equal(cropped.cpu().numpy()[1], expected)
    np.testing.assert_array_equal(flipped.cpu().numpy(), x[:, :, ::-1])
