"""Tensor-core convolution (pyneural.cuda.conv_tc, csrc/cuda/conv_tc.cu) against a float64 reference.

The reference is pyneural.kernels.conv's float64 numpy path on the operands *as the kernel sees them*
(rounded to bf16 / fp16), so only the fp32 accumulation is measured: ||out - ref|| / ||ref|| within
4 * K * eps32, K the GEMM's reduction length (C/G*KH*KW forward, OC/G*KH*KW backward-data,
N*OH*OW backward-weight), plus half a unit of the output format for 16-bit outputs. Shapes divide
no tile (N=2, C=5..16, H, W=5..9, OC=7..20), plus NHWC / NCHW cases whose channels and rows are
multiples of 8 (the 16-byte copy path). Outputs start as NaN, so an element no thread writes fails.
Runs on a GPU or the emulated device (small shapes: the emulator runs every thread).
"""
import numpy as np
import pytest

from conftest import rel_err

from pyneural.cuda import conv_tc, emulator
from pyneural.kernels import conv as cpu

pytestmark = pytest.mark.cuda

EPS32 = float(np.finfo(np.float32).eps)
LAYOUTS = ("NCHW", "NHWC")
PASSES = ("fwd", "bwd_data", "bwd_weight")
# N, C, H, W, OC, (KH, KW), stride, padding, dilation, groups
CASES = {
    "3x3": (2, 5, 7, 9, 7, (3, 3), 1, 1, 1, 1),
    "stride2": (2, 6, 9, 8, 10, (3, 3), 2, 1, 1, 1),
    "dilation2": (2, 7, 9, 9, 9, (3, 3), 1, 2, 2, 1),
    "groups2": (2, 10, 6, 7, 14, (3, 3), 1, 1, 1, 2),
    "rect": (2, 5, 8, 9, 7, (3, 2), (2, 1), (1, 0), (1, 2), 1),
    "1x1": (2, 16, 5, 8, 20, (1, 1), 1, 0, 1, 1),
    "vector": (2, 16, 5, 16, 16, (3, 3), 1, 1, 1, 2),  # Cg = OCg = 8, W = 16: 16-byte chunks
}


@pytest.fixture(scope="module")
def cp(cuda_xp):
    return cuda_xp


def np_dtype(name):
    if name == "bfloat16":
        return np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    return np.dtype(name)


def rounded(a, name):
    """Host float64 values of ``a`` rounded to the 16-bit type ``name``."""
    return np.asarray(a).astype(np_dtype(name)).astype(np.float64)


def to_layout(a, layout):
    """An NCHW activation or OIHW weight in ``layout`` (NHWC / OHWI: channels last)."""
    return a if layout == "NCHW" else np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def from_layout(a, layout):
    return a if layout == "NCHW" else a.transpose(0, 3, 1, 2)


def device(cp, a, layout, name):
    try:
        return cp.asarray(to_layout(a, layout).astype(np_dtype(name)))
    except Exception as e:  # a CuPy without bfloat16
        pytest.skip(f"this CuPy cannot hold {name} arrays: {e}")


def host64(a):
    return np.asarray(a.get()).astype(np.float64)


def assert_all_written(out):
    bad = int(np.count_nonzero(~np.isfinite(host64(out))))
    assert bad == 0, f"{bad} of {out.size} output elements are not finite (left unwritten?)"


def problem(rng, case, name="bfloat16"):
    """Rounded float64 x, w, dy of a case and its hyper-parameters (stride, padding, dilation, groups)."""
    n, c, h, w, oc, (kh, kw), s, p, d, g = case
    x = rounded(rng.standard_normal((n, c, h, w)), name)
    wt = rounded(rng.standard_normal((oc, c // g, kh, kw)), name)
    dy = rounded(rng.standard_normal(cpu.conv2d_forward(x, wt, None, s, p, d, g).shape), name)
    return x, wt, dy, (s, p, d, g)


def layout_shape(shape, layout):
    """An NCHW / OIHW shape in ``layout``."""
    return tuple(shape) if layout == "NCHW" else (shape[0], shape[2], shape[3], shape[1])


def run_pass(cp, kind, x, w, dy, hyper, layout, name, out=None, **kw):
    """Run pass ``kind`` on the device; returns (result, float64 reference in NCHW, K)."""
    dev = lambda a: device(cp, a, layout, name)  # noqa: E731
    if kind == "fwd":
        got = conv_tc.conv2d_forward(dev(x), dev(w), None, *hyper, layout=layout, out=out, **kw)
        ref = cpu.conv2d_forward(x, w, None, *hyper)
    elif kind == "bwd_data":
        got = conv_tc.conv2d_backward_data(dev(dy), dev(w), layout_shape(x.shape, layout), *hyper, layout=layout,
                                           out=out, **kw)
        ref = cpu.conv2d_backward_data(dy, w, x.shape, *hyper)
    else:
        got = conv_tc.conv2d_backward_weight(dev(dy), dev(x), layout_shape(w.shape, layout), *hyper, layout=layout,
                                             out=out, **kw)
        ref = cpu.conv2d_backward_weight(dy, x, w.shape, *hyper)
    return got, ref, reduction_length(kind, x, w, dy, hyper[3])


def reduction_length(kind, x, w, dy, groups):
    """K of pass ``kind``'s GEMM: the number of products summed per output element."""
    taps = w.shape[2] * w.shape[3]
    return {"fwd": w.shape[1] * taps, "bwd_data": w.shape[0] // groups * taps,
            "bwd_weight": dy.shape[0] * dy.shape[2] * dy.shape[3]}[kind]


def out_shape(kind, x, w, dy, layout):
    return layout_shape({"fwd": dy, "bwd_data": x, "bwd_weight": w}[kind].shape, layout)


def bound(K):
    return 4 * K * EPS32


# ---- each pass, each layout, each geometry ------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("kind", PASSES)
def test_pass_matches_float64(cp, rng, kind, case, layout):
    x, w, dy, hyper = problem(rng, CASES[case])
    out = cp.full(out_shape(kind, x, w, dy, layout), np.nan, dtype=np.float32)
    got, ref, K = run_pass(cp, kind, x, w, dy, hyper, layout, "bfloat16", out=out)
    assert got is out and got.dtype == np.float32
    assert_all_written(out)
    assert rel_err(from_layout(host64(out), layout), ref) < bound(K)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["bfloat16", "float16"])
@pytest.mark.parametrize("kind", PASSES)
def test_16_bit_output_in_an_array_the_wrapper_allocates(cp, rng, kind, name, layout):
    """out_dtype = the input dtype: fp32 accumulation, one rounding at the store (half a unit)."""
    x, w, dy, hyper = problem(rng, CASES["groups2"], name)
    got, ref, K = run_pass(cp, kind, x, w, dy, hyper, layout, name, out_dtype=np_dtype(name))
    assert got.dtype == np_dtype(name) and got.shape == out_shape(kind, x, w, dy, layout)
    assert_all_written(got)  # the emulated device's empty() is NaN
    unit = 2.0 ** -8 if name == "bfloat16" else 2.0 ** -11
    assert rel_err(from_layout(host64(got), layout), ref) < bound(K) + unit


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_forward_fuses_bias_and_relu(cp, rng, name, layout):
    x, w, _, hyper = problem(rng, CASES["stride2"], name)
    bias = rng.standard_normal(w.shape[0]).astype(np.float32)
    got = conv_tc.conv2d_forward(device(cp, x, layout, name), device(cp, w, layout, name), cp.asarray(bias),
                                 *hyper, relu=True, layout=layout)
    ref = np.maximum(cpu.conv2d_forward(x, w, bias.astype(np.float64), *hyper), 0)
    assert rel_err(from_layout(host64(got), layout), ref) < bound(w[0].size)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_backward_passes_are_the_adjoints_of_forward(cp, rng, layout):
    """<conv(x, w), dy> = <x, dx(dy, w)> = <w, dw(dy, x)>: the three kernels agree with each other,
    independently of the CPU reference (all three products sum the same terms)."""
    x, w, dy, hyper = problem(rng, CASES["rect"])
    y, _, _ = run_pass(cp, "fwd", x, w, dy, hyper, layout, "bfloat16")
    dx, _, _ = run_pass(cp, "bwd_data", x, w, dy, hyper, layout, "bfloat16")
    dw, _, _ = run_pass(cp, "bwd_weight", x, w, dy, hyper, layout, "bfloat16")
    forward = np.vdot(from_layout(host64(y), layout), dy)
    scale = np.abs(from_layout(host64(y), layout)).ravel() @ np.abs(dy).ravel()
    for total in (np.vdot(x, from_layout(host64(dx), layout)), np.vdot(w, from_layout(host64(dw), layout))):
        assert abs(total - forward) < bound(x.size) * scale


def test_matches_torch_on_the_rounded_operands(cp, rng):
    torch = pytest.importorskip("torch")
    x, w, dy, (s, p, d, g) = problem(rng, CASES["groups2"])
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, None, s, p, d, g)
    ty.backward(torch.tensor(dy))
    for kind, want in (("fwd", ty.detach()), ("bwd_data", tx.grad), ("bwd_weight", tw.grad)):
        got, _, K = run_pass(cp, kind, x, w, dy, (s, p, d, g), "NHWC", "bfloat16")
        assert rel_err(from_layout(host64(got), "NHWC"), want.numpy()) < bound(K), kind


# ---- backward-weight's K slices -----------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_backward_weight_split_over_k_slices(cp, rng, layout):
    """N*OH*OW = 1152 (36 k-tiles): several slices add atomically into a zeroed fp32 buffer; a bf16 dw
    is rounded once from it. Deterministic mode runs one slice."""
    case = (2, 6, 24, 24, 5, (3, 3), 1, 1, 1, 1)
    x, w, dy, hyper = problem(rng, case)
    dims, _ = conv_tc._geometry("t", layout_shape(x.shape, layout), layout_shape(w.shape, layout), *hyper, layout)
    assert conv_tc.weight_splits(dims, layout) > 1
    for kw in ({}, {"deterministic": True}):
        got, ref, K = run_pass(cp, "bwd_weight", x, w, dy, hyper, layout, "bfloat16", **kw)
        assert rel_err(from_layout(host64(got), layout), ref) < bound(K)
    got, ref, K = run_pass(cp, "bwd_weight", x, w, dy, hyper, layout, "bfloat16", out_dtype=np_dtype("bfloat16"))
    assert got.dtype == np_dtype("bfloat16") and rel_err(from_layout(host64(got), layout), ref) < bound(K) + 2.0 ** -8


# ---- the element-wise path and determinism --------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_misaligned_operands_take_the_elementwise_path(cp, rng, layout):
    """Operands one element past a 16-byte boundary: no chunk may be copied whole, same answer."""
    x, w, dy, hyper = problem(rng, CASES["vector"])
    bf16 = np_dtype("bfloat16")

    def shifted(a):
        host = to_layout(a, layout).astype(bf16)
        buf = cp.empty(host.size + 1, dtype=bf16)
        view = buf[1:].reshape(host.shape)
        view[...] = cp.asarray(host)
        assert view.data.ptr % 16 != 0 and view.flags.c_contiguous
        return view

    g = hyper[3]
    y = conv_tc.conv2d_forward(shifted(x), shifted(w), None, *hyper, layout=layout)
    dx = conv_tc.conv2d_backward_data(shifted(dy), shifted(w), layout_shape(x.shape, layout), *hyper, layout=layout)
    dw = conv_tc.conv2d_backward_weight(shifted(dy), shifted(x), layout_shape(w.shape, layout), *hyper, layout=layout)
    for kind, got, ref in (("fwd", y, cpu.conv2d_forward(x, w, None, *hyper)),
                           ("bwd_data", dx, cpu.conv2d_backward_data(dy, w, x.shape, *hyper)),
                           ("bwd_weight", dw, cpu.conv2d_backward_weight(dy, x, w.shape, *hyper))):
        assert rel_err(from_layout(host64(got), layout), ref) < bound(reduction_length(kind, x, w, dy, g)), kind


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kind", PASSES)
def test_runs_twice_to_the_same_bits(cp, rng, kind, layout):
    """No atomics (backward-weight deterministic): the same inputs give the same bits, fresh outputs."""
    x, w, dy, hyper = problem(rng, CASES["dilation2"])
    kw = {"deterministic": True} if kind == "bwd_weight" else {}
    first, _, _ = run_pass(cp, kind, x, w, dy, hyper, layout, "bfloat16", **kw)
    second, _, _ = run_pass(cp, kind, x, w, dy, hyper, layout, "bfloat16", **kw)
    assert first is not second
    assert np.asarray(first.get()).tobytes() == np.asarray(second.get()).tobytes()


def test_every_kernel_the_wrapper_names_exists(cp):
    for kind in PASSES:
        for layout in LAYOUTS:
            for dtype in conv_tc.operand_dtypes():
                assert conv_tc._kernel(kind, layout, dtype) is not None


def test_python_tile_constants_match_the_header():
    import re
    from pyneural.cuda import _backend
    header = _backend.source_path("gemm_tc_tile.cuh").read_text()
    consts = {k: int(v) for k, v in re.findall(r"constexpr int (BM|BN|THREADS|TILE_BYTES) = (\d+);", header)}
    assert consts == {"BM": conv_tc.BLOCK[0], "BN": conv_tc.BLOCK[1], "THREADS": conv_tc.THREADS,
                      "TILE_BYTES": conv_tc.STAGE_BYTES // 2}
    assert re.search(rf"#define PN_TC_STAGES {conv_tc.STAGES}\n", header)


# ---- race mode (emulated device) ------------------------------------------------------------------
@pytest.mark.skipif(not emulator.enabled(), reason="race mode is the emulated device's")
@pytest.mark.parametrize("layout", LAYOUTS)
def test_race_free_on_the_emulated_device(cp, rng, layout):
    """Every pass of the vector-path case with shared-memory race detection on: cp.async stages,
    plain 16-byte stores and ldmatrix reads are ordered by the main loop's barriers."""
    x, w, dy, hyper = problem(rng, CASES["vector"])
    with emulator.racecheck():
        for kind in PASSES:
            got, ref, K = run_pass(cp, kind, x, w, dy, hyper, layout, "bfloat16")
            assert rel_err(from_layout(host64(got), layout), ref) < bound(K)


# ---- bad input ----------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors(cp):
    f16 = np.float16
    x = cp.ones((2, 4, 6, 6), dtype=f16)
    w = cp.ones((3, 4, 3, 3), dtype=f16)
    with pytest.raises(TypeError, match="x must be a cupy.ndarray"):
        conv_tc.conv2d_forward(np.ones((2, 4, 6, 6), f16), w)
    with pytest.raises(TypeError, match="x must have dtype .*float16, got float32"):
        conv_tc.conv2d_forward(x.astype(np.float32), w.astype(np.float32))
    with pytest.raises(TypeError, match="share one dtype"):
        conv_tc.conv2d_forward(x, w.astype(np_dtype("bfloat16")))
    with pytest.raises(ValueError, match="w must have 4 dimensions"):
        conv_tc.conv2d_forward(x, w.reshape(3, 36))
    with pytest.raises(ValueError, match=r"weight \(2, 4, 3, 3\) expects 8 input channels \(groups=2\)"):
        conv_tc.conv2d_forward(x, w[:2].copy(), groups=2)
    with pytest.raises(ValueError, match="layout must be 'NCHW' or 'NHWC'"):
        conv_tc.conv2d_forward(x, w, layout="CHWN")
    with pytest.raises(ValueError, match="does not fit the padded input"):
        conv_tc.conv2d_forward(x, w, dilation=4)
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        conv_tc.conv2d_forward(x, w, cp.ones(4, dtype=np.float32))
    with pytest.raises(TypeError, match="out_dtype must be float32 or the input dtype float16"):
        conv_tc.conv2d_forward(x, w, out_dtype=np.float64)
    with pytest.raises(ValueError, match=r"out must have shape \(2, 3, 4, 4\)"):
        conv_tc.conv2d_forward(x, w, out=cp.empty((2, 3, 6, 6), dtype=np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        conv_tc.conv2d_forward(cp.ones((2, 6, 6, 4), dtype=f16).transpose(0, 3, 1, 2), w)
    with pytest.raises(ValueError, match=r"dy has shape \(2, 3, 6, 6\), the convolution of x_shape"):
        conv_tc.conv2d_backward_data(cp.ones((2, 3, 6, 6), dtype=f16), w, (2, 4, 6, 6))
    with pytest.raises(ValueError, match=r"dy has shape \(2, 3, 6, 6\), the convolution of x \(2, 4, 6, 6\)"):
        conv_tc.conv2d_backward_weight(cp.ones((2, 3, 6, 6), dtype=f16), x, (3, 4, 3, 3))


# ---- the framework: autocast on the device ---------------------------------------------------------
def test_autocast_cnn_on_the_device_matches_the_cpu(cp, rng, monkeypatch):
    """A small CNN (3x3, strided grouped 3x3, 1x1) forward + backward under pn.autocast("cuda") runs
    the tensor-core convolutions and gives what autocast on the CPU gives (the same rounded operands;
    only the fp32 summation order differs)."""
    import pyneural as pn
    from pyneural import nn

    calls = []
    for name in ("conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight"):
        real = getattr(conv_tc, name)
        monkeypatch.setattr(conv_tc, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))

    def model(device):
        pn.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=2),
                             nn.ReLU(), nn.Conv2d(12, 5, 1), nn.Flatten()).to(device)

    x = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)
    results = {}
    for dev in ("cpu", "cuda"):
        net = model(dev)
        xt = pn.tensor(x, device=dev, requires_grad=True)
        with pn.autocast(dev, dtype=pn.bfloat16):
            y = net(xt)
        gy = np.linspace(-1, 1, y.shape[0] * y.shape[1], dtype=np.float32).reshape(y.shape)
        y.backward(pn.tensor(gy, device=dev))
        results[dev] = [y.detach().cpu().numpy(), xt.grad.cpu().numpy()] + [p.grad.cpu().numpy()
                                                                           for p in net.parameters()]
        assert y.dtype == np.float32 and y.device == dev
    assert {"conv2d_forward", "conv2d_backward_data", "conv2d_backward_weight"} <= set(calls)
    for got, want in zip(results["cuda"], results["cpu"]):
        assert rel_err(got, want) < 1e-3
