"""The layers PyTorch image scripts use, against PyTorch: conv2d with non-contiguous weights, Conv1d,
ConvTranspose2d, LayerNorm, GroupNorm, adaptive / dilated / ceil-mode pooling, interpolate (nearest,
bilinear), Identity, Flatten / Unflatten, ModuleList / ModuleDict names, Embedding(padding_idx).

Each layer runs in both libraries on the same inputs and parameters, forward and backward (one random
cotangent), in float64 (agreement to rounding) and float32 (agreement within float32's error on
sums of a few dozen terms). Every new differentiable op also passes a float64 finite-difference
gradient check at sizes that divide no tile, the C++ row-normalisation kernel is held to its float64
reference, bad input must raise an error naming the shapes, and one cuda test runs the layers on the
device against the CPU. Inputs are fresh each run, seeded from the run's base seed and the test's id
(conftest: --seed / PYNEURAL_TEST_SEED replays a run).
"""
import numpy as np
import pytest
from conftest import rel_err

import pyneural as pn
from pyneural import _C, nn
from pyneural import functional as F
from pyneural.kernels import layernorm as ln_kernels

torch = pytest.importorskip("torch")

# Norm-wise relative error allowed against PyTorch: float64 sums agree to ~1e-15; float32 sums of up
# to ~100 terms carry up to ~100 * 6e-8 per element, far less norm-wise.
TOL = {np.float64: 1e-11, np.float32: 2e-5}
DTYPES = (np.float64, np.float32)


def assert_close(ours, theirs, tol, what):
    """``ours`` (a pyneural Tensor or array) matches ``theirs`` (a torch tensor or array) norm-wise."""
    ours = ours.data if isinstance(ours, pn.Tensor) else ours
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    assert ours.shape == tuple(theirs.shape), f"{what}: shape {ours.shape} != {tuple(theirs.shape)}"
    err = rel_err(ours, theirs)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def both(rng, dtype, arrays):
    """The arrays as pyneural and torch leaves that require grad (same values, dtype ``dtype``)."""
    ours = [pn.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    theirs = [torch.tensor(np.asarray(a, dtype=dtype), requires_grad=True) for a in arrays]
    return ours, theirs


def check_against_torch(rng, dtype, ours_fn, theirs_fn, arrays, what, ours_params=(), theirs_params=()):
    """Forward ``ours_fn(*pn leaves)`` and ``theirs_fn(*torch leaves)``, backward one cotangent through
    both, and compare the outputs, the inputs' gradients and the given parameters' gradients."""
    ours_in, theirs_in = both(rng, dtype, arrays)
    y, t = ours_fn(*ours_in), theirs_fn(*theirs_in)
    tol = TOL[dtype]
    assert y.dtype == dtype, f"{what}: output dtype {y.dtype}"
    assert_close(y, t, tol, f"{what} forward")
    cot = rng.standard_normal(tuple(t.shape))
    (y * pn.tensor(cot, dtype=dtype)).sum().backward()
    t.backward(torch.tensor(cot, dtype=t.dtype))
    for i, (a, b) in enumerate(zip(ours_in, theirs_in)):
        assert_close(a.grad, b.grad, tol, f"{what} grad of input {i}")
    for (name, p), q in zip(ours_params, theirs_params):
        assert_close(p.grad, q.grad, tol, f"{what} grad of {name}")


def torch_twin(ours, theirs, dtype):
    """Give ``theirs`` (a torch module) ``ours``'s parameters, by state_dict name, both in ``dtype``;
    returns the (name, parameter) pairs of both in the same order."""
    ours.to(dtype)
    theirs.to(torch.float64 if dtype == np.float64 else torch.float32)
    mine = dict(ours.named_parameters())
    assert sorted(mine) == sorted(n for n, _ in theirs.named_parameters()), "parameter names differ from PyTorch's"
    with torch.no_grad():
        for name, q in theirs.named_parameters():
            q.copy_(torch.tensor(mine[name].data))
    pairs = list(theirs.named_parameters())
    return [(n, mine[n]) for n, _ in pairs], [q for _, q in pairs]


def check_module(rng, dtype, ours, theirs, x_shape, what, call=None):
    """A pyneural layer and its torch twin on one random input: outputs and every gradient."""
    ours_params, theirs_params = torch_twin(ours, theirs, dtype)
    call = call or (lambda m, x: m(x))
    check_against_torch(rng, dtype, lambda x: call(ours, x), lambda x: call(theirs, x),
                        [rng.standard_normal(x_shape)], what, ours_params, theirs_params)


# ---- convolutions ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["permuted", "sliced"])
def test_conv2d_takes_a_non_contiguous_weight(rng, dtype, layout):
    x = rng.standard_normal((2, 3, 7, 9))
    if layout == "permuted":  # stored (C, O, kh, kw), seen as (O, C, kh, kw)
        store = rng.standard_normal((3, 5, 3, 3))
        view = lambda w: w.permute(1, 0, 2, 3)  # noqa: E731
    else:  # every other output channel of a larger weight
        store = rng.standard_normal((10, 3, 3, 3))
        view = lambda w: w[::2]  # noqa: E731
    assert not pn.tensor(store).permute((1, 0, 2, 3)).data.flags.c_contiguous
    check_against_torch(
        rng, dtype,
        lambda x, w: F.conv2d(x, pn.permute(w, (1, 0, 2, 3)) if layout == "permuted" else w[::2], padding=1),
        lambda x, w: torch.nn.functional.conv2d(x, view(w), padding=1),
        [x, store], f"conv2d with a {layout} weight")


CONV1D = [dict(stride=1, padding=0, dilation=1, groups=1), dict(stride=2, padding=2, dilation=1, groups=1),
          dict(stride=1, padding=1, dilation=3, groups=2), dict(stride=3, padding=1, dilation=2, groups=6)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("conf", CONV1D, ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_conv1d_matches_torch(rng, dtype, conf, bias):
    ours = nn.Conv1d(6, 4 if conf["groups"] < 6 else 12, 3, bias=bias, **conf)
    theirs = torch.nn.Conv1d(6, ours.out_channels, 3, bias=bias, **conf)
    check_module(rng, dtype, ours, theirs, (3, 6, 23), f"Conv1d {conf}")


CONV_T = [dict(stride=1, padding=0, output_padding=0, groups=1, dilation=1),
          dict(stride=2, padding=1, output_padding=1, groups=1, dilation=1),
          dict(stride=(3, 2), padding=(2, 0), output_padding=(2, 1), groups=2, dilation=1),
          dict(stride=2, padding=1, output_padding=0, groups=3, dilation=(2, 1)),
          dict(stride=1, padding=1, output_padding=1, groups=1, dilation=2)]  # output_padding >= stride


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("conf", CONV_T, ids=str)
def test_conv_transpose2d_matches_torch(rng, dtype, conf):
    ours = nn.ConvTranspose2d(6, 12, (3, 2), **conf)
    theirs = torch.nn.ConvTranspose2d(6, 12, (3, 2), **conf)
    check_module(rng, dtype, ours, theirs, (2, 6, 5, 7), f"ConvTranspose2d {conf}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transpose2d_output_size_and_no_bias(rng, dtype):
    ours = nn.ConvTranspose2d(4, 3, 3, stride=3, padding=1, bias=False)
    theirs = torch.nn.ConvTranspose2d(4, 3, 3, stride=3, padding=1, bias=False)
    call = lambda m, x: m(x, output_size=(2, 3, 14, 13))  # noqa: E731  (12 or 13 reachable per side: +2, +1)
    check_module(rng, dtype, ours, theirs, (2, 4, 5, 5), "ConvTranspose2d(output_size)", call)


def test_conv_layers_initialise_like_torch():
    """Same fan-in rule as PyTorch: weight and bias uniform within 1/sqrt(fan_in) (the transposed
    weight's fan-in is out_channels/groups * kh * kw)."""
    pn.manual_seed(0)
    for ours, fan_in in ((nn.Conv1d(6, 4, 5, groups=2), 3 * 5), (nn.ConvTranspose2d(6, 8, 3, groups=2), 4 * 9)):
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(ours.bias.data).max() <= bound
        assert 0.9 * bound < np.abs(ours.weight.data).max() <= bound  # 60 and 216 draws: one lands near the bound
    assert nn.ConvTranspose2d(6, 8, 3, groups=2).weight.shape == (6, 4, 3, 3)
    assert tuple(torch.nn.ConvTranspose2d(6, 8, 3, groups=2).weight.shape) == (6, 4, 3, 3)


# ---- normalization ---------------------------------------------------------------------------------

LAYER_NORMS = [((4, 7, 33), 33, {}), ((3, 5, 6), (5, 6), {}), ((6, 17), 17, dict(elementwise_affine=False)),
               ((2, 3, 4, 5), (4, 5), dict(bias=False))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape,normalized,kwargs", LAYER_NORMS, ids=str)
def test_layer_norm_matches_torch(rng, dtype, x_shape, normalized, kwargs):
    ours, theirs = nn.LayerNorm(normalized, **kwargs), torch.nn.LayerNorm(normalized, **kwargs)
    for p in ours.parameters():  # away from the ones / zeros init, so the affine map counts
        p.data[...] = rng.standard_normal(p.shape)
    check_module(rng, dtype, ours, theirs, x_shape, f"LayerNorm {normalized} {kwargs}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_with_a_bias_only_and_a_large_mean(rng, dtype):
    x = 50.0 + rng.standard_normal((5, 40))  # |mean| >> std: the statistics must not cancel
    b = rng.standard_normal(40)
    check_against_torch(rng, dtype, lambda x, b: F.layer_norm(x, (40,), None, b, eps=1e-3),
                        lambda x, b: torch.nn.functional.layer_norm(x, (40,), None, b, eps=1e-3), [x, b],
                        "layer_norm(bias only)")


GROUP_NORMS = [((3, 6, 5, 7), 3, True), ((2, 8, 9), 4, True), ((4, 6), 2, True), ((2, 4, 3, 5), 1, False),
               ((2, 6, 11), 6, True)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("x_shape,groups,affine", GROUP_NORMS, ids=str)
def test_group_norm_matches_torch(rng, dtype, x_shape, groups, affine):
    ours = nn.GroupNorm(groups, x_shape[1], affine=affine)
    theirs = torch.nn.GroupNorm(groups, x_shape[1], affine=affine)
    for p in ours.parameters():
        p.data[...] = rng.standard_normal(p.shape)
    check_module(rng, dtype, ours, theirs, x_shape, f"GroupNorm({groups}, {x_shape[1]})")


NORM_ROWS = [(37, 1031, 1, 1, "wb"), (12, 90, 3, 1, "w"), (12, 70, 4, 7, "wb"), (10, 45, 5, 9, "b"),
             (1, 5000, 1, 1, ""), (64, 3 * 49, 2, 49, "wb")]


@pytest.mark.parametrize("rows,D,groups,inner,params", NORM_ROWS, ids=str)
def test_norm_rows_kernel_matches_float64_reference(rng, rows, D, groups, inner, params):
    """The float32 C++ kernel against the whole-array float64 code, odd sizes, every parameter layout."""
    count = groups * D // inner
    x = (3.0 + rng.standard_normal((rows, D))).astype(np.float32)
    w = rng.standard_normal(count).astype(np.float32) if "w" in params else None
    b = rng.standard_normal(count).astype(np.float32) if "b" in params else None
    dy = rng.standard_normal((rows, D)).astype(np.float32)
    f64 = lambda a: None if a is None else a.astype(np.float64)  # noqa: E731
    y, mean, rstd = ln_kernels.norm_rows_forward(x, w, b, 1e-5, groups, inner)
    y_ref, mean_ref, rstd_ref = ln_kernels.norm_rows_forward(f64(x), f64(w), f64(b), 1e-5, groups, inner)
    for name, a, r in (("y", y, y_ref), ("mean", mean, mean_ref), ("rstd", rstd, rstd_ref)):
        assert_close(a, r, 1e-6, f"forward {name}")
    for needs in ((True, True, True), (True, False, False), (False, True, True)):
        grads = ln_kernels.norm_rows_backward(dy, x, mean, rstd, w, groups, inner, needs)
        refs = ln_kernels.norm_rows_backward(f64(dy), f64(x), mean.astype(np.float64), rstd.astype(np.float64),
                                             f64(w), groups, inner, needs)
        for name, g, r, needed in zip(("dx", "dweight", "dbias"), grads, refs, needs):
            assert (g is None) == (not needed), name
            if needed:
                # the parameter sums run over rows: float32 products, float64 accumulation
                assert_close(g, r, 1e-5, f"backward {name} needs={needs}")


def test_norm_rows_kernel_is_independent_of_the_thread_count(rng):
    x = rng.standard_normal((300, 129)).astype(np.float32)
    dy = rng.standard_normal((300, 129)).astype(np.float32)
    w = rng.standard_normal(129).astype(np.float32)
    _, mean, rstd = ln_kernels.norm_rows_forward(x, w, None)
    first = ln_kernels.norm_rows_backward(dy, x, mean, rstd, w)
    for _ in range(3):
        again = ln_kernels.norm_rows_backward(dy, x, mean, rstd, w)
        assert all(np.array_equal(a, b) for a, b in zip(first, again))


# ---- pooling and interpolation -------------------------------------------------------------------

MAX_POOLS = [dict(kernel_size=3, stride=2, padding=1, dilation=2), dict(kernel_size=3, stride=2, ceil_mode=True),
             dict(kernel_size=(2, 3), stride=(2, 1), padding=(1, 1), dilation=(1, 2), ceil_mode=True),
             dict(kernel_size=2, stride=2), dict(kernel_size=3, stride=2, padding=1)]  # last two: the kernels


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("conf", MAX_POOLS, ids=str)
def test_max_pool2d_matches_torch(rng, dtype, conf):
    check_module(rng, dtype, nn.MaxPool2d(**conf), torch.nn.MaxPool2d(**conf), (2, 3, 11, 10), f"MaxPool2d {conf}")
    x = rng.standard_normal((2, 3, 11, 10))
    _, ours = F.max_pool2d(pn.tensor(x, dtype=dtype), return_indices=True, **conf)
    _, theirs = torch.nn.functional.max_pool2d(torch.tensor(x, dtype=torch.float64), return_indices=True, **conf)
    assert ours.dtype == np.int64 and np.array_equal(ours.data, theirs.numpy())


AVG_POOLS = [dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
             dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
             dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=True),
             dict(kernel_size=2, stride=2, padding=1, divisor_override=3), dict(kernel_size=3, stride=2)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("conf", AVG_POOLS, ids=str)
def test_avg_pool2d_matches_torch(rng, dtype, conf):
    check_module(rng, dtype, nn.AvgPool2d(**conf), torch.nn.AvgPool2d(**conf), (2, 3, 10, 11), f"AvgPool2d {conf}")


ADAPTIVE = [((3, 5), (2, 3, 10, 7)), (1, (2, 3, 5, 7)), ((None, 9), (2, 3, 5, 7)), (4, (2, 3, 8, 12)),
            ((5, 2), (1, 2, 13, 3))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output_size,x_shape", ADAPTIVE, ids=str)
@pytest.mark.parametrize("kind", ["Avg", "Max"])
def test_adaptive_pool2d_matches_torch(rng, dtype, output_size, x_shape, kind):
    ours = getattr(nn, f"Adaptive{kind}Pool2d")(output_size)
    theirs = getattr(torch.nn, f"Adaptive{kind}Pool2d")(output_size)
    check_module(rng, dtype, ours, theirs, x_shape, f"Adaptive{kind}Pool2d({output_size})")


INTERPOLATIONS = [dict(size=(7, 11)), dict(scale_factor=2), dict(scale_factor=(1.7, 0.6)), dict(size=(3, 4)),
                  dict(scale_factor=2.5), dict(scale_factor=1.5, recompute_scale_factor=True), dict(size=1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("conf", INTERPOLATIONS, ids=str)
@pytest.mark.parametrize("mode,align_corners", [("nearest", None), ("bilinear", False), ("bilinear", True)])
def test_interpolate_matches_torch(rng, dtype, conf, mode, align_corners):
    ours = nn.Upsample(mode=mode, align_corners=align_corners, **conf)
    theirs = torch.nn.Upsample(mode=mode, align_corners=align_corners, **conf)
    check_module(rng, dtype, ours, theirs, (2, 3, 5, 6), f"Upsample {mode} {conf}")


def test_nearest_indices_round_as_torch_float32_does(rng):
    """2 -> 82 rows and 6 -> 74 columns: one source index each where float32 arithmetic (PyTorch's)
    and float64 arithmetic disagree."""
    x = rng.standard_normal((1, 2, 2, 6)).astype(np.float32)
    ours = F.interpolate(pn.tensor(x), size=(82, 74))
    theirs = torch.nn.functional.interpolate(torch.tensor(x), size=(82, 74))
    assert np.array_equal(ours.data, theirs.numpy())


@pytest.mark.parametrize("pool", ["max_pool2d-kernel", "max_pool2d-ceil", "adaptive_max_pool2d"])
def test_max_pool_ties_go_to_the_first_in_row_major_order(rng, pool):
    """Few distinct values, many ties: indices and gradients land where PyTorch's do."""
    x = rng.integers(0, 3, (2, 3, 9, 8)).astype(np.float32)
    calls = {"max_pool2d-kernel": lambda f, t: f(t, 3, 2, 1, return_indices=True),
             "max_pool2d-ceil": lambda f, t: f(t, 3, 2, 0, 1, True, return_indices=True),
             "adaptive_max_pool2d": lambda f, t: f(t, (4, 3), return_indices=True)}
    fn = calls[pool]
    ours_fn, theirs_fn = getattr(F, pool.split("-")[0]), getattr(torch.nn.functional, pool.split("-")[0])
    xo, xt = pn.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    (y, i), (t, j) = fn(ours_fn, xo), fn(theirs_fn, xt)
    assert np.array_equal(i.data, j.numpy()) and np.array_equal(y.data, t.detach().numpy())
    cot = rng.standard_normal(tuple(t.shape)).astype(np.float32)
    (y * pn.tensor(cot)).sum().backward()
    t.backward(torch.tensor(cot))
    assert_close(xo.grad, xt.grad, 1e-6, f"{pool} gradient with ties")


# ---- small layers and containers ------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_identity_flatten_unflatten_match_torch(rng, dtype):
    for ours, theirs in ((nn.Identity(3, k=4), torch.nn.Identity(3, k=4)), (nn.Flatten(), torch.nn.Flatten()),
                         (nn.Flatten(0, 2), torch.nn.Flatten(0, 2)), (nn.Flatten(-3, -2), torch.nn.Flatten(-3, -2)),
                         (nn.Unflatten(1, (3, 2)), torch.nn.Unflatten(1, (3, 2))),
                         (nn.Unflatten(-2, (-1, 2)), torch.nn.Unflatten(-2, (-1, 2)))):
        check_module(rng, dtype, ours, theirs, (2, 6, 4, 3), repr(ours))


def test_module_list_and_dict_name_parameters_as_torch():
    def build(lib):
        class Net(lib.nn.Module):
            def __init__(self):
                super().__init__()
                self.layers = lib.nn.ModuleList([lib.nn.Linear(3, 4), lib.nn.LayerNorm(4)])
                self.layers.append(lib.nn.Conv1d(4, 2, 3))
                self.layers.insert(1, lib.nn.Identity())
                self.heads = lib.nn.ModuleDict({"cls": lib.nn.Linear(4, 2), "box": lib.nn.GroupNorm(2, 4)})
                self.heads["up"] = lib.nn.ConvTranspose2d(4, 2, 2)
                del self.heads["box"]
        return Net()
    ours, theirs = build(pn), build(torch)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert "layers.0.weight" in ours.state_dict() and "heads.up.weight" in ours.state_dict()
    assert [type(m).__name__ for m in ours.layers] == [type(m).__name__ for m in theirs.layers]
    assert list(ours.heads.keys()) == ["cls", "up"] and "cls" in ours.heads and len(ours.heads) == 2
    del ours.layers[0]
    assert [k for k in ours.layers._modules] == ["0", "1", "2"]
    with pytest.raises(KeyError, match=r"no module 'box' \(keys: \['cls', 'up'\]\)"):
        ours.heads["box"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_embedding_padding_idx_matches_torch(rng, dtype):
    ours, theirs = nn.Embedding(11, 5, padding_idx=3), torch.nn.Embedding(11, 5, padding_idx=3)
    assert np.all(ours.weight.data[3] == 0) and np.any(ours.weight.data[4] != 0)
    idx = np.array([[3, 1, 3], [10, 3, 0]])
    ours_params, theirs_params = torch_twin(ours, theirs, dtype)
    y, t = ours(pn.tensor(idx)), theirs(torch.tensor(idx))
    assert_close(y, t, TOL[dtype], "Embedding forward")
    cot = rng.standard_normal(tuple(t.shape))
    (y * pn.tensor(cot, dtype=dtype)).sum().backward()
    t.backward(torch.tensor(cot, dtype=t.dtype))
    assert np.all(ours.weight.grad.data[3] == 0)
    assert_close(ours.weight.grad, theirs.weight.grad, TOL[dtype], "Embedding grad")


# ---- finite differences (float64) -----------------------------------------------------------------

def _leaves(rng, *shapes):
    return [pn.tensor(rng.standard_normal(s), dtype=pn.float64, requires_grad=True) for s in shapes]


def _distinct(rng, shape):
    """Well-separated distinct values: every max is unambiguous under the finite-difference step."""
    return pn.tensor(rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1, dtype=pn.float64, requires_grad=True)


GRADCHECKS = {
    "conv1d": lambda r: (lambda x, w, b: F.conv1d(x, w, b, 2, 1, 2, 2), _leaves(r, (2, 4, 13), (6, 2, 3), (6,))),
    "conv_transpose2d": lambda r: (lambda x, w, b: F.conv_transpose2d(x, w, b, (2, 3), 1, (1, 2), 2, 1),
                                   _leaves(r, (2, 4, 3, 4), (4, 3, 3, 2), (6,))),
    "conv_transpose2d-op>=stride": lambda r: (lambda x, w: F.conv_transpose2d(x, w, None, 1, 1, 1, 1, 2),
                                              _leaves(r, (1, 2, 4, 3), (2, 3, 3, 3))),
    "layer_norm": lambda r: (lambda x, w, b: F.layer_norm(x, (3, 5), w, b), _leaves(r, (4, 3, 5), (3, 5), (3, 5))),
    "group_norm": lambda r: (lambda x, w, b: F.group_norm(x, 3, w, b), _leaves(r, (2, 6, 3, 5), (6,), (6,))),
    "max_pool2d-dilation-ceil": lambda r: (lambda x: F.max_pool2d(x, 3, 2, 1, 2, True), [_distinct(r, (2, 2, 9, 8))]),
    "avg_pool2d-ceil-exclude-pad": lambda r: (lambda x: F.avg_pool2d(x, 3, 2, 1, True, False),
                                              _leaves(r, (2, 2, 9, 8))),
    "avg_pool2d-divisor_override": lambda r: (lambda x: F.avg_pool2d(x, 2, 2, 1, divisor_override=3),
                                              _leaves(r, (1, 2, 7, 8))),
    "adaptive_avg_pool2d": lambda r: (lambda x: F.adaptive_avg_pool2d(x, (3, 5)), _leaves(r, (2, 2, 7, 9))),
    "adaptive_max_pool2d": lambda r: (lambda x: F.adaptive_max_pool2d(x, (4, 3)), [_distinct(r, (2, 2, 7, 5))]),
    "interpolate-nearest": lambda r: (lambda x: F.interpolate(x, scale_factor=(1.5, 0.7)), _leaves(r, (2, 2, 5, 7))),
    "interpolate-bilinear": lambda r: (lambda x: F.interpolate(x, (7, 4), mode="bilinear"), _leaves(r, (2, 2, 5, 7))),
    "interpolate-bilinear-corners": lambda r: (lambda x: F.interpolate(x, (3, 9), mode="bilinear",
                                                                       align_corners=True), _leaves(r, (1, 2, 5, 7))),
}


@pytest.mark.parametrize("name", sorted(GRADCHECKS))
def test_gradcheck(rng, name):
    fn, inputs = GRADCHECKS[name](rng)
    assert pn.gradcheck(fn, inputs)


# ---- bad input --------------------------------------------------------------------------------------

BAD = [
    (lambda: F.conv1d(pn.ones(2, 3, 8, 8), pn.ones(4, 3, 3)), ValueError, r"input \(N, C, L\).*\(2, 3, 8, 8\)"),
    (lambda: F.conv1d(pn.ones(2, 3, 8), pn.ones(4, 2, 3)), ValueError, r"3 channels, weight \(4, 2, 3\) expects 2"),
    (lambda: nn.Conv1d(3, 4, 3)(pn.ones(2, 5, 9)), ValueError, r"expected input \(N, 3, L\), got \(2, 5, 9\)"),
    (lambda: F.conv_transpose2d(pn.ones(1, 4, 5, 5), pn.ones(3, 2, 3, 3)), ValueError,
     r"input has 4 channels, weight \(3, 2, 3, 3\) expects 3"),
    (lambda: F.conv_transpose2d(pn.ones(1, 4, 5, 5), pn.ones(4, 2, 3, 3), stride=2, output_padding=2), ValueError,
     r"output_padding \(2, 2\) must be smaller than the stride \(2, 2\) or the dilation \(1, 1\)"),
    (lambda: F.conv_transpose2d(pn.ones(1, 4, 1, 1), pn.ones(4, 2, 1, 1), padding=1), ValueError,
     r"input \(1, 4, 1, 1\) with weight \(4, 2, 1, 1\).*empty output size \(-1, -1\)"),
    (lambda: F.conv_transpose2d(pn.ones(1, 4, 5, 5), pn.ones(4, 2, 3, 3), groups=3), ValueError,
     r"groups=3 must be a positive int dividing the input channels 4"),
    (lambda: nn.ConvTranspose2d(2, 2, 3, stride=2)(pn.ones(1, 2, 4, 4), output_size=(12, 9)), ValueError,
     r"output_size \(12, 9\) is not reachable from input \(1, 2, 4, 4\)"),
    (lambda: F.layer_norm(pn.ones(4, 6), (5,)), ValueError, r"normalized_shape \(5,\) must be the last dimensions "
                                                            r"of the input \(4, 6\)"),
    (lambda: F.layer_norm(pn.ones(4, 6), 6, pn.ones(5)), ValueError, r"weight has shape \(5,\), expected \(6,\)"),
    (lambda: nn.LayerNorm((3, 4))(pn.ones(2, 4, 3)), ValueError, r"LayerNorm.*\(3, 4\).*input \(2, 4, 3\)"),
    (lambda: F.group_norm(pn.ones(2, 6, 4), 4), ValueError, r"num_groups=4 must divide the 6 channels of input "
                                                            r"\(2, 6, 4\)"),
    (lambda: nn.GroupNorm(2, 6)(pn.ones(2, 4, 3)), ValueError, r"expected input \(N, 6, \*\), got \(2, 4, 3\)"),
    (lambda: nn.GroupNorm(4, 6), ValueError, r"num_channels=6 must be divisible by num_groups=4"),
    (lambda: F.layer_norm(pn.ones(2, 3), 3, pn.ones(3, dtype=pn.float64)), TypeError, r"weight has dtype float64"),
    (lambda: F.adaptive_avg_pool2d(pn.ones(2, 3, 4), 2), ValueError, r"\(N, C, H, W\), got shape \(2, 3, 4\)"),
    (lambda: F.adaptive_max_pool2d(pn.ones(1, 1, 4, 4), (2, 0)), ValueError, r"positive ints or None, got \(2, 0\)"),
    (lambda: nn.AdaptiveAvgPool2d(3)(pn.ones(3, 4)), ValueError, r"expected input \(N, C, H, W\), got \(3, 4\)"),
    (lambda: F.max_pool2d(pn.ones(1, 1, 4, 4), 2, dilation=4), ValueError,
     r"input \(1, 1, 4, 4\) with padding \(0, 0\) is smaller than the kernel \(2, 2\) dilated by \(4, 4\)"),
    (lambda: nn.MaxPool2d(3, padding=2), ValueError, r"padding \(2, 2\) must be at most half the kernel size"),
    (lambda: F.avg_pool2d(pn.ones(1, 1, 4, 4), 2, divisor_override=0), ValueError, r"divisor_override"),
    (lambda: F.interpolate(pn.ones(1, 1, 4, 4), size=2, scale_factor=2), ValueError, r"exactly one of size"),
    (lambda: F.interpolate(pn.ones(1, 4, 4), scale_factor=2), ValueError, r"\(N, C, H, W\), got shape \(1, 4, 4\)"),
    (lambda: F.interpolate(pn.ones(1, 1, 4, 4), size=2, mode="bicubic"), ValueError, r"'nearest' or 'bilinear'"),
    (lambda: F.interpolate(pn.ones(1, 1, 4, 4), size=2, align_corners=True), ValueError, r"align_corners"),
    (lambda: F.interpolate(pn.ones(1, 1, 4, 4), scale_factor=0.1), ValueError, r"empty output \(0, 0\) from input "
                                                                              r"\(1, 1, 4, 4\)"),
    (lambda: nn.Unflatten(1, (4, 2))(pn.ones(3, 6)), ValueError, r"dimension 1 of input \(3, 6\) has 6"),
]


@pytest.mark.parametrize("call,error,pattern", BAD, ids=[p for _, _, p in BAD])
def test_bad_input_names_the_shapes(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_norm_rows_binding_checks_its_arrays():
    x = np.ones((4, 6), np.float32)
    y, mean, rstd = np.empty_like(x), np.empty(4, np.float32), np.empty(4, np.float32)
    with pytest.raises(ValueError, match=r"weight has shape \(5,\), expected \(6,\)"):
        _C.norm_rows_forward(x, np.ones(5, np.float32), None, y, mean, rstd)
    with pytest.raises(ValueError, match=r"mean has shape \(3,\), expected \(4,\)"):
        _C.norm_rows_forward(x, None, None, y, np.empty(3, np.float32), rstd)
    with pytest.raises(ValueError, match="y overlaps an input"):
        _C.norm_rows_forward(x, None, None, x, mean, rstd)
    with pytest.raises(ValueError, match="inner 4 does not divide the row length 6"):
        _C.norm_rows_forward(x, None, None, y, mean, rstd, 1, 4)
    with pytest.raises(ValueError, match="dx overlaps an input"):
        _C.norm_rows_backward(x, x.copy(), mean, rstd, None, x, None, None)
    with pytest.raises(TypeError, match=r"dtype float32 or float64, got int32 \(shape \(4, 6\)\)"):
        ln_kernels.norm_rows_forward(x.astype(np.int32))
    with pytest.raises(ValueError, match=r"groups=3 must divide the rows.*x \(4, 6\)"):
        ln_kernels.norm_rows_forward(x, groups=3)


# ---- on the CUDA device -------------------------------------------------------------------------------

@pytest.mark.cuda
def test_layers_on_the_device_match_the_cpu(cuda_xp, rng):
    """LayerNorm, ConvTranspose2d, adaptive pooling (kernel and general windows), ceil-mode max pooling
    and interpolate on the (emulated) CUDA device: outputs and gradients equal the CPU's."""
    layers = [(nn.LayerNorm(7), (3, 4, 7)), (nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1,
                                                                 groups=2), (2, 4, 5, 6)),
              (nn.AdaptiveAvgPool2d((3, 4)), (2, 3, 7, 9)), (nn.AdaptiveAvgPool2d(2), (2, 3, 6, 8)),
              (nn.MaxPool2d(3, 2, ceil_mode=True), (2, 3, 8, 9)), (nn.Upsample(scale_factor=1.5), (2, 3, 4, 5)),
              (nn.Upsample(size=(5, 9), mode="bilinear"), (2, 3, 4, 5)), (nn.GroupNorm(2, 4), (2, 4, 3, 5))]
    for layer, shape in layers:
        for p in layer.parameters():
            p.data[...] = rng.standard_normal(p.shape)
        x = rng.standard_normal(shape).astype(np.float32)
        cot = rng.standard_normal(layer(pn.tensor(x)).shape).astype(np.float32)
        results = []
        for device in ("cpu", "cuda"):
            layer.to(device).zero_grad()
            xt = pn.tensor(x, requires_grad=True, device=device)
            y = layer(xt)
            assert y.device == device
            (y * pn.tensor(cot, device=device)).sum().backward()
            results.append([y.detach().cpu().numpy(), xt.grad.cpu().numpy()] +
                           [p.grad.cpu().numpy() for p in layer.parameters()])
        for i, (on_cpu, on_device) in enumerate(zip(*results)):
            assert_close(on_device, on_cpu, 1e-5, f"{layer!r} on the device, array {i}")
