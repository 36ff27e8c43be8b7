"""softmax, log_softmax and the fused softmax cross-entropy: float32 C++ on every SIMD path against
the float64 numpy path; the float64 path against the plain formulas and, for the backward, against
finite differences of its own forward."""
import numpy as np
import pytest

from conftest import poisoned, rel_err
from pyneural import _C
from pyneural.kernels.softmax import log_softmax, softmax, softmax_cross_entropy, softmax_cross_entropy_backward



# Rows shorter than, between and longer than the 8- and 16-lane vectors, odd lengths, 1-D and 3-D.
SHAPES = [(17,), (1, 1), (33, 10), (9, 15), (5, 16), (7, 1000), (3, 4, 37), (2, 129)]
XENT_SHAPES = [(1, 1), (7, 3), (33, 10), (6, 17), (19, 1000)]


def logits_like(rng, shape, scale=3.0):
    """float64 logits that are exact float32 values, so both paths start from the same numbers."""
    return (rng.standard_normal(shape) * scale).astype(np.float32).astype(np.float64)


# ---- softmax / log_softmax -----------------------------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_float32_matches_float64(isa, rng, shape):
    x = logits_like(rng, shape)
    ref = softmax(x)
    assert np.allclose(ref, np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True), rtol=1e-12, atol=1e-12)
    assert rel_err(softmax(x.astype(np.float32)), ref) < 1e-6


@pytest.mark.parametrize("shape", SHAPES)
def test_log_softmax_float32_matches_float64(isa, rng, shape):
    x = logits_like(rng, shape)
    ref = log_softmax(x)
    assert np.allclose(ref, x - np.log(np.exp(x).sum(axis=-1, keepdims=True)), rtol=1e-12, atol=1e-12)
    assert rel_err(log_softmax(x.astype(np.float32)), ref) < 1e-6


@pytest.mark.parametrize("kernel", [_C.softmax_rows, _C.log_softmax_rows])
def test_softmax_bindings_write_every_output(isa, rng, kernel):
    x = logits_like(rng, (23, 45)).astype(np.float32)
    ref = (softmax if kernel is _C.softmax_rows else log_softmax)(x.astype(np.float64))
    y = poisoned(x.shape)
    kernel(x, y)
    assert rel_err(y, ref) < 1e-6


def test_softmax_extreme_logits_are_finite(isa, rng):
    # float32 logits of about 1e4 carry an ulp of 1e-3, so the reference starts from the same rounded values.
    x = (rng.choice([-1e4, 1e4], size=(8, 40)) + rng.standard_normal((8, 40))).astype(np.float32)
    ref = softmax(x.astype(np.float64))
    p, lp = softmax(x), log_softmax(x)
    assert np.all(np.isfinite(p)) and np.all(np.isfinite(lp))
    assert rel_err(p, ref) < 1e-6
    assert rel_err(lp, log_softmax(x.astype(np.float64))) < 1e-6


# ---- cross-entropy forward -----------------------------------------------------------------------

def xent_formula(x, labels, e):
    """-(1-e) log p[y] - (e/C) sum_c log p[c], straight from the definition (moderate logits only)."""
    logp = np.log(np.exp(x) / np.exp(x).sum(axis=1, keepdims=True))
    n, c = x.shape
    return -(1 - e) * logp[np.arange(n), labels] - (e / c) * logp.sum(axis=1)


@pytest.mark.parametrize("shape", XENT_SHAPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_xent_float32_matches_float64(isa, rng, shape, smoothing):
    x = logits_like(rng, shape)
    labels = rng.integers(0, shape[1], shape[0])
    ref_losses, ref_probs = softmax_cross_entropy(x, labels, smoothing)
    assert np.allclose(ref_losses, xent_formula(x, labels, smoothing), rtol=1e-12, atol=1e-12)
    assert np.allclose(ref_probs, softmax(x), rtol=1e-12, atol=1e-12)
    losses, probs = softmax_cross_entropy(x.astype(np.float32), labels, smoothing)
    assert losses.dtype == probs.dtype == np.float32
    if shape[1] == 1:  # one class: the loss is exactly 0
        assert np.all(losses == 0)
    else:
        assert rel_err(losses, ref_losses) < 1e-5
    assert rel_err(probs, ref_probs) < 1e-6


def test_xent_binding_writes_every_output(isa, rng):
    x = logits_like(rng, (21, 19)).astype(np.float32)
    labels = rng.integers(0, 19, 21)
    ref_losses, ref_probs = softmax_cross_entropy(x.astype(np.float64), labels, 0.2)
    losses, probs = poisoned(21), poisoned((21, 19))
    _C.softmax_xent_forward(x, labels, losses, probs, 0.2)
    assert rel_err(losses, ref_losses) < 1e-5
    assert rel_err(probs, ref_probs) < 1e-6


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_xent_extreme_logits_give_finite_losses(isa, rng, smoothing):
    n, c = 16, 50
    # Logits of about 1e4 carry a float32 ulp of 1e-3: the reference starts from the same rounded values.
    x = (rng.choice([-1e4, 1e4], size=(n, c)) + rng.standard_normal((n, c))).astype(np.float32)
    labels = rng.integers(0, c, n)
    ref_losses, ref_probs = softmax_cross_entropy(x.astype(np.float64), labels, smoothing)
    assert np.all(np.isfinite(ref_losses))
    losses, probs = softmax_cross_entropy(x, labels, smoothing)
    assert np.all(np.isfinite(losses)) and np.all(np.isfinite(probs))
    assert rel_err(losses, ref_losses) < 1e-5
    assert rel_err(probs, ref_probs) < 1e-6


# ---- cross-entropy backward ----------------------------------------------------------------------

@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_xent_backward_float64_matches_finite_differences(rng, smoothing):
    n, c = 4, 6
    x = logits_like(rng, (n, c))
    labels = rng.integers(0, c, n)
    dlosses = rng.standard_normal(n)
    _, probs = softmax_cross_entropy(x, labels, smoothing)
    grad = softmax_cross_entropy_backward(probs, labels, dlosses, smoothing)

    def objective(z):
        return float(dlosses @ softmax_cross_entropy(z, labels, smoothing)[0])

    h = 1e-6
    numeric = np.empty_like(x)
    for idx in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[idx] = h
        numeric[idx] = (objective(x + step) - objective(x - step)) / (2 * h)
    assert rel_err(grad, numeric) < 1e-7


@pytest.mark.parametrize("shape", XENT_SHAPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_xent_backward_float32_matches_float64(isa, rng, shape, smoothing):
    n, c = shape
    x = logits_like(rng, shape)
    labels = rng.integers(0, c, n)
    dlosses = rng.standard_normal(n).astype(np.float32)
    # probs near 1 cancel against the one-hot target: the reference starts from the float32 probs.
    probs = softmax_cross_entropy(x, labels, smoothing)[1].astype(np.float32)
    ref = softmax_cross_entropy_backward(probs.astype(np.float64), labels, dlosses.astype(np.float64), smoothing)
    out = poisoned(shape)
    got = softmax_cross_entropy_backward(probs, labels, dlosses, smoothing, out=out)
    assert got is out
    assert rel_err(got, ref) < 1e-5


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_xent_backward_in_place(isa, rng, dtype):
    x = logits_like(rng, (12, 30))
    labels = rng.integers(0, 30, 12)
    dlosses = np.full(12, 1 / 12)
    probs = softmax_cross_entropy(x, labels)[1].astype(np.float32).astype(dtype)
    ref = softmax_cross_entropy_backward(probs.astype(np.float64), labels, dlosses)
    assert softmax_cross_entropy_backward(probs, labels, dlosses.astype(dtype), out=probs) is probs
    assert rel_err(probs, ref) < 1e-6


# ---- bad input: one test each ------------------------------------------------------------------

def test_xent_rejects_label_too_large():
    with pytest.raises(ValueError, match=r"labels\[1\] = 5 is out of range for C=5"):
        softmax_cross_entropy(np.zeros((2, 5), np.float32), np.array([0, 5]))


def test_xent_rejects_negative_label():
    with pytest.raises(ValueError, match=r"labels\[0\] = -1 is out of range"):
        softmax_cross_entropy(np.zeros((2, 5), np.float64), np.array([-1, 0]))


def test_xent_binding_checks_labels_itself():
    losses, probs = poisoned(2), poisoned((2, 5))
    with pytest.raises(ValueError, match=r"labels\[1\] = 7 is out of range for 5 classes"):
        _C.softmax_xent_forward(np.zeros((2, 5), np.float32), np.array([0, 7]), losses, probs)
    assert np.all(np.isnan(probs))  # refused before writing anything


def test_xent_backward_binding_checks_labels_itself():
    with pytest.raises(ValueError, match=r"labels\[0\] = -3 is out of range"):
        _C.softmax_xent_backward(np.zeros((2, 5), np.float32), np.array([-3, 0]), np.ones(2, np.float32),
                                 np.empty((2, 5), np.float32))


def test_xent_rejects_int32_labels():
    with pytest.raises(TypeError, match="labels must have dtype int64"):
        softmax_cross_entropy(np.zeros((2, 5), np.float32), np.array([0, 1], np.int32))


def test_xent_rejects_label_count():
    with pytest.raises(ValueError, match=r"labels has shape \(3,\) but there are 2 rows"):
        softmax_cross_entropy(np.zeros((2, 5), np.float32), np.array([0, 1, 2]))


def test_xent_rejects_1d_logits():
    with pytest.raises(ValueError, match=r"logits must have 2 dimensions, got shape \(5,\)"):
        softmax_cross_entropy(np.zeros(5, np.float32), np.array([0]))


def test_xent_rejects_smoothing_out_of_range():
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\], got 1.5"):
        softmax_cross_entropy(np.zeros((2, 5), np.float32), np.array([0, 1]), label_smoothing=1.5)


def test_xent_rejects_non_contiguous_logits():
    with pytest.raises(ValueError, match="C-contiguous"):
        softmax_cross_entropy(np.zeros((5, 2), np.float32).T, np.array([0, 1]))


def test_xent_backward_rejects_dlosses_shape():
    with pytest.raises(ValueError, match=r"dlosses has shape \(3,\) but probs \(2, 5\) has 2 rows"):
        softmax_cross_entropy_backward(np.zeros((2, 5), np.float32), np.array([0, 1]), np.ones(3, np.float32))


def test_xent_backward_rejects_mixed_dtypes():
    with pytest.raises(TypeError, match="share one dtype"):
        softmax_cross_entropy_backward(np.zeros((2, 5), np.float32), np.array([0, 1]), np.ones(2))


def test_xent_backward_rejects_out_overlapping_dlosses():
    buf = np.zeros(12, np.float32)
    with pytest.raises(ValueError, match="overlaps dlosses"):
        softmax_cross_entropy_backward(np.zeros((2, 5), np.float32), np.array([0, 1]), buf[:2],
                                       out=buf[1:11].reshape(2, 5))


def test_softmax_rejects_scalar():
    with pytest.raises(ValueError, match="at least 1 dimension"):
        softmax(np.ones((), np.float32))


def test_softmax_rejects_zero_size():
    with pytest.raises(ValueError, match="zero-size"):
        log_softmax(np.zeros((3, 0), np.float32))


def test_softmax_rejects_int_dtype():
    with pytest.raises(TypeError, match="x must have dtype float32 or float64"):
        softmax(np.zeros((2, 3), np.int64))


def test_softmax_binding_rejects_wrong_output_shape():
    with pytest.raises(ValueError, match=r"y must have shape \(2, 3\)"):
        _C.softmax_rows(np.zeros((2, 3), np.float32), np.empty((3, 2), np.float32))
