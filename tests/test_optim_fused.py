"""The fused dense optimizer steps of the CPU backend (csrc/cpu/optim_update.cpp: one pass over a
float32 parameter, its gradient and state) give the same bits as the array-op formulation
(backend.sgd_step_reference / adam_step_reference, which float64 and non-dense arrays take), on
sizes around the kernel's chunk and its parallel threshold, in both layouts; bad arguments raise."""
import numpy as np
import pytest

from pyneural import _C, backend
from pyneural.backend import cpu

SIZES = [1, 1000, 16385, 70001]  # one element, a short tail, a chunk + 1, past the two-thread threshold

SGD_CASES = {
    "plain": dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False),
    "momentum": dict(momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False),
    "dampened-decay": dict(momentum=0.8, dampening=0.3, weight_decay=1e-2, nesterov=False),
    "nesterov-decay": dict(momentum=0.9, dampening=0.0, weight_decay=5e-4, nesterov=True),
    "decay-only": dict(momentum=0.0, dampening=0.0, weight_decay=1e-3, nesterov=False),
}


def _arrays(rng, n, k):
    return [rng.standard_normal(n).astype(np.float32) for _ in range(k)]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("case", sorted(SGD_CASES))
def test_sgd_matches_the_array_ops_bitwise(rng, n, case):
    kw = SGD_CASES[case]
    p, g, b = _arrays(rng, n, 3)
    with_buf = kw["momentum"] != 0
    for first in ([True, False] if with_buf else [False]):
        ours, ref = p.copy(), p.copy()
        b_ours, b_ref = (b.copy(), b.copy()) if with_buf else (None, None)
        cpu.sgd_update(ours, g, b_ours, 0.05, kw["momentum"], kw["dampening"], kw["weight_decay"], kw["nesterov"],
                       first)
        backend.sgd_step_reference(ref, g, b_ref, 0.05, kw["momentum"], kw["dampening"], kw["weight_decay"],
                                   kw["nesterov"], first)
        np.testing.assert_array_equal(ours, ref)
        if with_buf:
            np.testing.assert_array_equal(b_ours, b_ref)
            if first:
                expected_buf = g + np.float32(kw["weight_decay"]) * p if kw["weight_decay"] else g
                np.testing.assert_array_equal(b_ours, expected_buf)  # PyTorch starts the buffer at the gradient


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("weight_decay,decoupled", [(0.0, False), (1e-2, False), (1e-2, True)])
def test_adam_matches_the_array_ops_bitwise(rng, n, weight_decay, decoupled):
    p, g = _arrays(rng, n, 2)
    m = rng.standard_normal(n).astype(np.float32) * 0.1
    v = np.abs(rng.standard_normal(n)).astype(np.float32) * 0.01
    state = {"ours": [p.copy(), m.copy(), v.copy()], "ref": [p.copy(), m.copy(), v.copy()]}
    for step in (1, 2, 7):
        cpu.adam_update(state["ours"][0], g, state["ours"][1], state["ours"][2], step, 1e-3, (0.9, 0.999), 1e-8,
                        weight_decay, decoupled)
        backend.adam_step_reference(state["ref"][0], g, state["ref"][1], state["ref"][2], step, 1e-3, (0.9, 0.999),
                                    1e-8, weight_decay, decoupled)
        for a, b in zip(state["ours"], state["ref"]):
            np.testing.assert_array_equal(a, b)


def test_channels_last_parameters_take_the_fused_step_in_their_layout(rng):
    p = np.ascontiguousarray(rng.standard_normal((3, 5, 4, 6)).astype(np.float32).transpose(0, 2, 3, 1))
    p = p.transpose(0, 3, 1, 2)  # a channels_last (N, C, H, W) array
    g = rng.standard_normal(p.shape).astype(np.float32)  # C-contiguous: the backend brings it to p's layout
    buf = backend.same_layout(np.zeros_like(p), p)
    ref_p, ref_buf = p.copy(order="K"), buf.copy(order="K")
    cpu.sgd_update(p, g, buf, 0.1, 0.9, 0.0, 1e-3, False, True)
    backend.sgd_step_reference(ref_p, g, ref_buf, 0.1, 0.9, 0.0, 1e-3, False, True)
    assert backend.is_channels_last(p) and backend.is_channels_last(buf)
    np.testing.assert_array_equal(p, ref_p)
    np.testing.assert_array_equal(buf, ref_buf)


def test_float64_takes_the_array_ops(rng):
    p = rng.standard_normal(10)
    g = rng.standard_normal(10)
    expected = p - 0.1 * g
    cpu.sgd_update(p, g, None, 0.1, 0.0, 0.0, 0.0, False, False)
    np.testing.assert_allclose(p, expected, rtol=1e-15)


def test_bad_arguments_raise_clear_errors():
    p, g = np.zeros(8, np.float32), np.zeros(8, np.float32)
    with pytest.raises(ValueError, match="sgd_update: buf must be given exactly when momentum != 0"):
        _C.sgd_update(p, g, None, 0.1, 0.9, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match="sgd_update: grad has 7 elements, the parameter 8"):
        _C.sgd_update(p, np.zeros(7, np.float32), None, 0.1, 0.0, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match="sgd_update: output overlaps an input"):
        _C.sgd_update(p, g, p, 0.1, 0.9, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match="sgd_update: grad: expected dtype float32, got float64"):
        _C.sgd_update(p, np.zeros(8), None, 0.1, 0.0, 0.0, 0.0, False, False)
    with pytest.raises(ValueError, match="adam_update: bias corrections must be > 0"):
        _C.adam_update(p, g, np.zeros(8, np.float32), np.zeros(8, np.float32), 1e-3, 0.9, 0.999, 1e-8, 0.0, False,
                       0.0, 0.1)
    with pytest.raises(ValueError, match="adam_update: exp_avg_sq: array must be C-contiguous"):
        _C.adam_update(p, g, np.zeros(8, np.float32), np.zeros(16, np.float32)[::2], 1e-3, 0.9, 0.999, 1e-8, 0.0,
                       False, 0.1, 0.1)
