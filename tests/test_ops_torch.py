"""The op surface against PyTorch, op by op, forward and backward, from one table.

Each case is one expression written once, as ``fn(L, F, *inputs)`` with ``L`` the library
(pyneural or torch) and ``F`` its functional module, so a case also checks that the call reads
the same in both. Inputs are fresh float64 draws (the seed is printed on failure); the values,
every gradient of a random cotangent, and the result dtypes must agree with torch to float64
rounding. A second pass runs pyneural's float64 finite-difference gradcheck on every
differentiable case (the ones marked ``fd=False`` sit on a kink or are exercised elsewhere).
Further tables: zero-size inputs, type promotion, modules, and bad inputs.
"""
import warnings
from collections import namedtuple

import numpy as np
import pytest

import pyneural as pn
import pyneural.functional as PF

torch = pytest.importorskip("torch")
TF = torch.nn.functional

# ---- inputs ------------------------------------------------------------------------------------

In = namedtuple("In", ["shape", "kind", "grad"])


def t(*shape, kind="normal", grad=True):
    """An input spec: a float64 tensor requiring grad unless ``kind`` says otherwise."""
    return In(shape, kind, grad and kind in _FLOAT_KINDS)


_FLOAT_KINDS = {"normal", "positive", "away", "distinct", "unit", "prob", "logprob", "weight", "ties"}


def draw(rng, spec):
    shape, kind = spec.shape, spec.kind
    if kind == "normal":
        return rng.standard_normal(shape)
    if kind == "positive":  # away from 0, for log, pow bases, divisors
        return np.abs(rng.standard_normal(shape)) + 0.5
    if kind == "away":  # at least 0.2 from 0, the kink of the relu family
        a = rng.standard_normal(shape)
        return np.where(a >= 0, a + 0.2, a - 0.2)
    if kind == "distinct":  # no ties: sort, topk, max
        n = int(np.prod(shape))
        return (rng.permutation(n).reshape(shape) - n / 2) * 0.37
    if kind == "ties":  # values from a small set: maximum/minimum ties
        return rng.integers(-2, 3, shape).astype(np.float64)
    if kind == "unit":  # probabilities for BCE
        return rng.uniform(0.05, 0.95, shape)
    if kind in ("prob", "logprob"):  # rows over dim 1 that sum to 1 (or their logs)
        e = np.exp(rng.standard_normal(shape))
        p = e / e.sum(axis=1, keepdims=True)
        return np.log(p) if kind == "logprob" else p
    if kind == "weight":
        return rng.uniform(0.3, 2.0, shape)
    if kind == "bool":
        return rng.random(shape) < 0.4
    if kind.startswith("index"):  # index<high>[ignore]: int64 in [0, high), some -100 with "ignore"
        high = int(kind[5:].rstrip("ignore"))
        a = rng.integers(0, high, shape)
        if kind.endswith("ignore") and a.size > 1:
            a.flat[:: 3] = -100
        return a
    if kind.startswith("perm"):  # a permutation of range(n) along the last axis (unique indices)
        return np.argsort(rng.random(shape), axis=-1)
    raise ValueError(kind)


def both(rng, specs):
    ours, theirs = [], []
    for spec in specs:
        a = draw(rng, spec)
        if a.dtype.kind == "f":
            ours.append(pn.tensor(a, dtype=pn.float64, requires_grad=spec.grad))
            theirs.append(torch.tensor(a, dtype=torch.float64, requires_grad=spec.grad))
        else:
            ours.append(pn.tensor(a))
            theirs.append(torch.tensor(a))
    return ours, theirs


def outputs(result):
    """An op's result as a flat list of tensors (split/chunk tuples, sort's (values, indices))."""
    if isinstance(result, (tuple, list)):
        return [r for part in result for r in outputs(part)]
    return [result]


# ---- the table -------------------------------------------------------------------------------

Case = namedtuple("Case", ["name", "fn", "inputs", "fd", "rtol"])


def case(name, fn, *inputs, fd=True, rtol=1e-9):
    """``rtol`` loosens the comparison where torch itself rounds (a float32 constant in a float64
    kernel)."""
    return Case(name, fn, inputs, fd, rtol)


CASES = [
    # arithmetic, broadcasting, pow
    case("add_broadcast", lambda L, F, a, b: a + b, t(2, 3, 4), t(3, 1)),
    case("add_alpha", lambda L, F, a, b: L.add(a, b, alpha=2.5), t(3, 4), t(4)),
    case("sub_alpha", lambda L, F, a, b: a.sub(b, alpha=-0.5), t(3, 4), t(3, 1)),
    case("mul_broadcast", lambda L, F, a, b: a * b, t(2, 1, 4), t(3, 1)),
    case("div_broadcast", lambda L, F, a, b: a / b, t(3, 4), t(4, kind="positive")),
    case("rdiv_scalar", lambda L, F, a: 2.0 / a, t(3, 4, kind="positive")),
    case("pow_tensor_tensor", lambda L, F, a, b: a ** b, t(3, 4, kind="positive"), t(4)),
    case("pow_function", lambda L, F, a, b: L.pow(a, b), t(2, 3, kind="positive"), t(2, 3)),
    case("pow_scalar_exponent", lambda L, F, a: a ** 3 - a ** 0.5, t(3, 4, kind="positive")),
    case("pow_zero_exponent_at_zero", lambda L, F, a: (a * 0) ** 0 + a, t(5)),
    case("pow_0d_exponent", lambda L, F, a, b: a ** b, t(3, 4, kind="positive"), t()),
    case("rpow_scalar_base", lambda L, F, a: 2.0 ** a + 0.5 ** a, t(3, 4)),
    case("rpow_zero_base", lambda L, F, a: 0.0 ** a, t(6, kind="positive"), fd=False),
    case("maximum", lambda L, F, a, b: L.maximum(a, b), t(3, 4), t(4)),
    case("minimum", lambda L, F, a, b: L.minimum(a, b), t(3, 4), t(3, 1)),
    case("maximum_ties", lambda L, F, a, b: a.maximum(b), t(4, 5, kind="ties"), t(4, 5, kind="ties"), fd=False),
    case("minimum_ties", lambda L, F, a, b: a.minimum(b), t(4, 5, kind="ties"), t(5, kind="ties"), fd=False),
    case("max_binary_overload", lambda L, F, a, b: L.max(a, b), t(3, 4), t(3, 4)),
    case("neg_abs", lambda L, F, a: -abs(a), t(3, 4, kind="away")),
    # matmul, every rank combination torch allows
    case("matmul_1d_1d", lambda L, F, a, b: a @ b, t(5), t(5)),
    case("matmul_1d_2d", lambda L, F, a, b: a @ b, t(3), t(3, 4)),
    case("matmul_2d_1d", lambda L, F, a, b: a @ b, t(4, 3), t(3)),
    case("matmul_2d_2d", lambda L, F, a, b: a @ b, t(4, 3), t(3, 5)),
    case("matmul_3d_1d", lambda L, F, a, b: a @ b, t(2, 4, 3), t(3)),
    case("matmul_1d_3d", lambda L, F, a, b: a @ b, t(3), t(2, 3, 4)),
    case("matmul_4d_1d", lambda L, F, a, b: L.matmul(a, b), t(2, 2, 4, 3), t(3)),
    case("matmul_1d_4d", lambda L, F, a, b: L.matmul(a, b), t(3), t(2, 2, 3, 4)),
    case("matmul_3d_2d", lambda L, F, a, b: a @ b, t(2, 4, 3), t(3, 5)),
    case("matmul_2d_3d", lambda L, F, a, b: a @ b, t(4, 3), t(2, 3, 5)),
    case("matmul_batched", lambda L, F, a, b: a @ b, t(2, 4, 3), t(2, 3, 5)),
    case("matmul_broadcast_batch", lambda L, F, a, b: a @ b, t(2, 1, 4, 3), t(3, 3, 2)),
    case("matmul_broadcast_one", lambda L, F, a, b: a @ b, t(1, 4, 3), t(2, 3, 2)),
    case("mm", lambda L, F, a, b: L.mm(a, b), t(4, 3), t(3, 2)),
    case("bmm", lambda L, F, a, b: L.bmm(a, b), t(2, 4, 3), t(2, 3, 2)),
    case("mv", lambda L, F, a, b: L.mv(a, b), t(4, 3), t(3)),
    case("dot", lambda L, F, a, b: L.dot(a, b), t(4), t(4)),
    case("outer", lambda L, F, a, b: L.outer(a, b), t(4), t(3)),
    # elementwise
    case("clamp_scalars", lambda L, F, a: a.clamp(-0.5, 0.7), t(4, 5)),
    case("clamp_min_only", lambda L, F, a: L.clamp(a, min=0.1), t(4, 5)),
    case("clamp_tensor_bounds", lambda L, F, a, lo, hi: a.clamp(lo, hi), t(4, 5), t(5), t(4, 1)),
    case("clamp_tensor_min", lambda L, F, a, lo: L.clamp(a, min=lo), t(4, 5), t(4, 5)),
    case("clamp_tensor_max", lambda L, F, a, hi: a.clamp(max=hi), t(4, 5), t(5)),
    case("clip", lambda L, F, a: L.clip(a, -0.3, 0.3), t(4, 5)),
    case("where", lambda L, F, c, a, b: L.where(c, a, b), t(3, 4, kind="bool"), t(3, 4), t(4)),
    case("where_scalar", lambda L, F, c, a: L.where(c, a, 0.5), t(3, 4, kind="bool"), t(3, 4)),
    case("tensor_where", lambda L, F, c, a, b: a.where(c, b), t(3, 4, kind="bool"), t(3, 4), t(3, 4)),
    # comparisons, logical and bitwise ops (bool results, outside the graph)
    case("comparison_operators", lambda L, F, a, b: (a < b, a <= 0.1, a > b, a >= b, a == a, a != b), t(3, 4),
         t(4), fd=False),
    case("comparison_functions", lambda L, F, a, b: (L.eq(a, b), L.ne(a, 0.0), L.lt(a, b), L.le(a, b), L.gt(a, 0),
                                                     L.ge(a, b)), t(3, 4, kind="ties"), t(4, kind="ties"), fd=False),
    case("comparison_methods", lambda L, F, a, b: (a.eq(b), a.ne(b), a.lt(0.5), a.le(b), a.gt(b), a.ge(-1)),
         t(3, 4, kind="ties"), t(3, 4, kind="ties"), fd=False),
    case("logical_functions", lambda L, F, a, b: (L.logical_and(a > 0, b), L.logical_or(a > 0, b > 1),
                                                  L.logical_xor(a, b), L.logical_not(a)), t(3, 4, kind="ties"),
         t(4, kind="ties"), fd=False),
    case("logical_methods", lambda L, F, a, b: (a.logical_and(b), (a > 0).logical_or(b > 0), a.logical_not()),
         t(3, 4, kind="bool"), t(3, 4, kind="bool"), fd=False),
    case("bitwise_operators_bool", lambda L, F, a, b: (a & b, a | b, a ^ b, ~a), t(3, 4, kind="bool"),
         t(4, kind="bool"), fd=False),
    case("bitwise_operators_int", lambda L, F, i, j: (i & j, i | 3, i ^ j, ~i), t(3, 4, kind="index7"),
         t(4, kind="index7"), fd=False),
    case("any_all", lambda L, F, m: (m.any(), m.all(), L.any(m, 1), m.all(0, keepdim=True), L.all(m, dim=1)),
         t(3, 4, kind="bool"), fd=False),
    case("any_all_numbers", lambda L, F, a: ((a > 2).any(), a.any(), (a * 0).all(-1)), t(3, 4, kind="ties"),
         fd=False),
    # reductions
    case("logsumexp_dim", lambda L, F, a: L.logsumexp(a, 1), t(3, 4, 2)),
    case("logsumexp_dims_keepdim", lambda L, F, a: a.logsumexp((0, 2), keepdim=True), t(3, 4, 2)),
    case("logsumexp_large", lambda L, F, a: (a * 400).logsumexp(-1), t(3, 5)),
    case("var_default", lambda L, F, a: a.var(), t(3, 4)),
    case("var_dim_correction0", lambda L, F, a: a.var(1, correction=0), t(3, 4)),
    case("var_correction2_keepdim", lambda L, F, a: L.var(a, (0, 1), keepdim=True, correction=2), t(3, 4, 2)),
    case("var_unbiased_false", lambda L, F, a: a.var(0, unbiased=False), t(3, 4)),
    case("var_positional_unbiased", lambda L, F, a: a.var(1, False, True), t(3, 4)),
    case("std_default", lambda L, F, a: a.std(), t(3, 4)),
    case("std_dim", lambda L, F, a: L.std(a, dim=0, correction=0), t(3, 4)),
    case("cumsum_dim0", lambda L, F, a: a.cumsum(0), t(4, 3)),
    case("cumsum_last", lambda L, F, a: L.cumsum(a, dim=-1), t(2, 3, 4)),
    case("sum_dims_keepdim", lambda L, F, a: a.sum((0, 2), keepdim=True), t(2, 3, 4)),
    case("mean_dim", lambda L, F, a: a.mean(-1), t(2, 3, 4)),
    case("max_dim", lambda L, F, a: a.max(1), t(3, 5, kind="distinct")),
    case("min_dim_keepdim", lambda L, F, a: a.min(0, keepdim=True), t(3, 5, kind="distinct")),
    case("max_all", lambda L, F, a: a.max(), t(3, 5, kind="distinct")),
    # sorting
    case("sort_ascending", lambda L, F, a: L.sort(a, dim=1), t(3, 6, kind="distinct")),
    case("sort_descending_dim0", lambda L, F, a: a.sort(0, descending=True), t(5, 3, kind="distinct")),
    case("sort_stable_ties", lambda L, F, a: a.sort(stable=True, dim=-1), t(3, 8, kind="ties"), fd=False),
    case("sort_stable_ties_descending", lambda L, F, a: a.sort(stable=True, dim=-1, descending=True),
         t(3, 8, kind="ties"), fd=False),
    case("argsort", lambda L, F, a: L.argsort(a, dim=0, descending=True) * 1.0 + a, t(5, 3, kind="distinct")),
    case("topk_largest", lambda L, F, a: L.topk(a, 3), t(3, 6, kind="distinct")),
    case("topk_smallest_dim0", lambda L, F, a: a.topk(2, dim=0, largest=False), t(5, 3, kind="distinct")),
    # indexing
    case("gather_dim1", lambda L, F, a, i: L.gather(a, 1, i), t(3, 5), t(3, 4, kind="index5", grad=False)),
    case("gather_dim0_smaller_index", lambda L, F, a, i: a.gather(0, i), t(4, 5), t(6, 3, kind="index4")),
    case("scatter_src", lambda L, F, a, i, s: a.scatter(1, i, s), t(3, 5), t(3, 5, kind="perm"), t(3, 5)),
    case("scatter_index_smaller", lambda L, F, a, i, s: L.scatter(a, 1, i[:2, :3], s), t(3, 5), t(3, 5, kind="perm"),
         t(2, 3)),
    case("scatter_value", lambda L, F, a, i: a.scatter(1, i[:, :3], 1.5), t(3, 5), t(3, 5, kind="perm")),
    case("scatter_add", lambda L, F, a, i, s: L.scatter_add(a, 0, i, s), t(3, 4), t(5, 4, kind="index3"), t(5, 4)),
    case("index_select", lambda L, F, a, i: L.index_select(a, 1, i), t(3, 4), t(6, kind="index4")),
    case("index_select_dim0", lambda L, F, a, i: a.index_select(0, i), t(4, 2, 3), t(5, kind="index4")),
    case("masked_fill_scalar", lambda L, F, a, m: a.masked_fill(m, -2.0), t(3, 4), t(3, 4, kind="bool")),
    case("masked_fill_broadcast_mask", lambda L, F, a, m: L.masked_fill(a, m, 0.5), t(3, 4), t(4, kind="bool")),
    case("masked_fill_tensor_value", lambda L, F, a, m, v: a.masked_fill(m, v), t(3, 4), t(3, 4, kind="bool"), t()),
    case("getitem_index_list", lambda L, F, a: a[[0, 2, 2]], t(3, 4)),
    case("nonzero", lambda L, F, a, m: L.nonzero(m) + a.sum(), t(2), t(3, 4, kind="bool")),
    # shape
    case("split_size", lambda L, F, a: L.split(a, 2, dim=1), t(3, 5)),
    case("split_sections", lambda L, F, a: a.split([1, 3, 1], 1), t(3, 5)),
    case("chunk", lambda L, F, a: L.chunk(a, 3, 0), t(7, 2)),
    case("chunk_method_dim1", lambda L, F, a: a.chunk(2, dim=1), t(3, 5)),
    case("repeat", lambda L, F, a: a.repeat(2, 1, 3), t(3, 2)),
    case("repeat_tuple", lambda L, F, a: a.repeat((2, 2)), t(3, 2)),
    case("expand_new_dims", lambda L, F, a: a.expand(2, 3, -1), t(3, 1)),
    case("flip", lambda L, F, a: L.flip(a, (0, 2)), t(2, 3, 4)),
    case("flip_method", lambda L, F, a: a.flip(1), t(2, 3, 4)),
    case("roll_dims", lambda L, F, a: L.roll(a, (1, -2), (0, 1)), t(3, 4)),
    case("roll_flat", lambda L, F, a: a.roll(5), t(3, 4)),
    # padding (4-D, every mode)
    case("pad_constant", lambda L, F, a: F.pad(a, (1, 2, 0, 1), value=0.5), t(1, 2, 3, 4)),
    case("pad_constant_crop", lambda L, F, a: F.pad(a, (-1, 2, 1, -1)), t(1, 2, 3, 4)),
    case("pad_constant_3dims", lambda L, F, a: F.pad(a, (1, 0, 0, 1, 2, 1)), t(1, 2, 3, 4)),
    case("pad_reflect", lambda L, F, a: F.pad(a, (2, 1, 1, 2), mode="reflect"), t(1, 2, 3, 4)),
    case("pad_replicate", lambda L, F, a: F.pad(a, (3, 1, 0, 2), mode="replicate"), t(1, 2, 3, 4)),
    case("pad_circular", lambda L, F, a: F.pad(a, (2, 4, 3, 1), mode="circular"), t(1, 2, 3, 4)),
    case("pad_reflect_3d_input", lambda L, F, a: F.pad(a, (1, 2), mode="reflect"), t(2, 3, 4)),
    # activations
    case("relu", lambda L, F, a: F.relu(a), t(3, 4, kind="away")),
    case("leaky_relu", lambda L, F, a: F.leaky_relu(a, 0.2), t(3, 4, kind="away")),
    case("leaky_relu_at_zero", lambda L, F, a: F.leaky_relu(a * 0, 0.1), t(4), fd=False),
    case("elu", lambda L, F, a: F.elu(a, alpha=0.7), t(3, 4, kind="away")),
    case("elu_at_zero", lambda L, F, a: F.elu(a * 0, alpha=2.0), t(4), fd=False),
    case("selu", lambda L, F, a: L.selu(a) + F.selu(a), t(3, 4, kind="away")),
    case("silu", lambda L, F, a: F.silu(a * 3), t(3, 4)),
    case("softplus", lambda L, F, a: F.softplus(a), t(3, 4)),
    case("softplus_beta_threshold", lambda L, F, a: F.softplus(a * 5, beta=2.0, threshold=3.0), t(3, 4, kind="away")),
    case("hardtanh", lambda L, F, a: F.hardtanh(a, -0.5, 0.8), t(3, 4)),
    case("hardtanh_ends", lambda L, F, a: F.hardtanh(a * 0 + 1.0), t(4), fd=False),
    case("relu6", lambda L, F, a: F.relu6(a * 5), t(3, 4, kind="away")),
    case("hardsigmoid", lambda L, F, a: F.hardsigmoid(a * 4), t(3, 4), rtol=1e-7),  # torch: 1/6 in float32
    case("hardswish", lambda L, F, a: F.hardswish(a * 4), t(3, 4)),
    case("hardswish_ends", lambda L, F, a: F.hardswish(a * 0 + 3.0) + F.hardswish(a * 0 - 3.0), t(4), fd=False),
    case("mish", lambda L, F, a: F.mish(a * 3), t(3, 4)),
    case("mish_large", lambda L, F, a: F.mish(a * 40), t(3, 4)),
    case("sigmoid", lambda L, F, a: L.sigmoid(a * 4), t(3, 4)),
    case("tanh", lambda L, F, a: a.tanh(), t(3, 4)),
    case("gelu", lambda L, F, a: F.gelu(a), t(3, 4)),
    case("gelu_tanh", lambda L, F, a: F.gelu(a, approximate="tanh"), t(3, 4)),
    case("softmax_dim0", lambda L, F, a: F.softmax(a, dim=0), t(3, 4)),
    case("log_softmax_dim1", lambda L, F, a: F.log_softmax(a, 1), t(3, 4, 2)),
    case("softmax_method_dtype", lambda L, F, a: a.softmax(-1, dtype=L.float32).double(), t(3, 4), fd=False,
         rtol=1e-6),
    # losses
    case("cross_entropy", lambda L, F, a, y: F.cross_entropy(a, y), t(5, 4), t(5, kind="index4")),
    case("cross_entropy_sum_smooth", lambda L, F, a, y: F.cross_entropy(a, y, reduction="sum", label_smoothing=0.2),
         t(5, 4), t(5, kind="index4")),
    case("cross_entropy_weight", lambda L, F, a, y, w: F.cross_entropy(a, y, weight=w), t(6, 4), t(6, kind="index4"),
         t(4, kind="weight", grad=False)),
    case("cross_entropy_weight_smooth_ignore",
         lambda L, F, a, y, w: F.cross_entropy(a, y, w, ignore_index=-100, label_smoothing=0.3),
         t(6, 4), t(6, kind="index4ignore"), t(4, kind="weight", grad=False)),
    case("cross_entropy_weight_none", lambda L, F, a, y, w: F.cross_entropy(a, y, w, reduction="none"),
         t(6, 4), t(6, kind="index4ignore"), t(4, kind="weight", grad=False)),
    case("cross_entropy_weight_smooth_none",
         lambda L, F, a, y, w: F.cross_entropy(a, y, w, reduction="none", label_smoothing=0.1),
         t(6, 4), t(6, kind="index4ignore"), t(4, kind="weight", grad=False)),
    case("cross_entropy_spatial_weight", lambda L, F, a, y, w: F.cross_entropy(a, y, weight=w, label_smoothing=0.1),
         t(2, 3, 2, 2), t(2, 2, 2, kind="index3ignore"), t(3, kind="weight", grad=False)),
    case("cross_entropy_ignore_index", lambda L, F, a, y: F.cross_entropy(a, y, ignore_index=-100), t(6, 4),
         t(6, kind="index4ignore")),
    case("cross_entropy_probs", lambda L, F, a, p: F.cross_entropy(a, p), t(5, 4), t(5, 4, kind="prob")),
    case("cross_entropy_probs_smooth_weight",
         lambda L, F, a, p, w: F.cross_entropy(a, p, weight=w, label_smoothing=0.25),
         t(5, 4), t(5, 4, kind="prob"), t(4, kind="weight", grad=False)),
    case("cross_entropy_probs_none", lambda L, F, a, p: F.cross_entropy(a, p, reduction="none"), t(5, 4),
         t(5, 4, kind="prob")),
    case("cross_entropy_probs_spatial_sum", lambda L, F, a, p: F.cross_entropy(a, p, reduction="sum"),
         t(2, 3, 2, 2), t(2, 3, 2, 2, kind="prob")),
    case("cross_entropy_unbatched", lambda L, F, a, y: F.cross_entropy(a, y[0]), t(4), t(1, kind="index4")),
    case("nll_loss", lambda L, F, a, y: F.nll_loss(a, y), t(5, 4, kind="logprob"), t(5, kind="index4")),
    case("nll_loss_weight_ignore", lambda L, F, a, y, w: F.nll_loss(a, y, weight=w), t(6, 4, kind="logprob"),
         t(6, kind="index4ignore"), t(4, kind="weight", grad=False)),
    case("nll_loss_none_spatial", lambda L, F, a, y: F.nll_loss(a, y, reduction="none"), t(2, 3, 4),
         t(2, 4, kind="index3ignore")),
    case("nll_loss_sum", lambda L, F, a, y, w: F.nll_loss(a, y, w, reduction="sum"), t(5, 3), t(5, kind="index3"),
         t(3, kind="weight", grad=False)),
    case("bce", lambda L, F, x, y: F.binary_cross_entropy(x, y), t(3, 4, kind="unit"), t(3, 4, kind="unit")),
    case("bce_weight_sum", lambda L, F, x, y, w: F.binary_cross_entropy(x, y, weight=w, reduction="sum"),
         t(3, 4, kind="unit"), t(3, 4, kind="unit"), t(4, kind="weight", grad=False)),
    case("bce_none", lambda L, F, x, y: F.binary_cross_entropy(x, y, reduction="none"), t(3, 4, kind="unit"),
         t(3, 4, kind="unit")),
    case("bce_with_logits", lambda L, F, x, y: F.binary_cross_entropy_with_logits(x * 3, y), t(3, 4),
         t(3, 4, kind="unit")),
    case("bce_with_logits_pos_weight",
         lambda L, F, x, y, w, pw: F.binary_cross_entropy_with_logits(x * 3, y, weight=w, pos_weight=pw),
         t(3, 4), t(3, 4, kind="unit"), t(3, 1, kind="weight", grad=False), t(4, kind="weight", grad=False)),
    case("bce_with_logits_large", lambda L, F, x, y: F.binary_cross_entropy_with_logits(x * 60, y, reduction="none"),
         t(3, 4, kind="away"), t(3, 4, kind="unit")),
    case("l1_loss", lambda L, F, x, y: F.l1_loss(x, y), t(3, 4), t(3, 4)),
    case("l1_loss_sum", lambda L, F, x, y: F.l1_loss(x, y, reduction="sum"), t(3, 4), t(3, 4)),
    case("mse_loss", lambda L, F, x, y: F.mse_loss(x, y), t(3, 4), t(3, 4)),
    case("mse_loss_none", lambda L, F, x, y: F.mse_loss(x, y, reduction="none"), t(3, 4), t(3, 4)),
    case("smooth_l1_loss", lambda L, F, x, y: F.smooth_l1_loss(x * 2, y), t(3, 4), t(3, 4)),
    case("smooth_l1_loss_beta", lambda L, F, x, y: F.smooth_l1_loss(x, y, reduction="sum", beta=0.5), t(3, 4),
         t(3, 4)),
    case("smooth_l1_loss_beta0", lambda L, F, x, y: F.smooth_l1_loss(x, y, beta=0.0), t(3, 4), t(3, 4)),
    case("huber_loss", lambda L, F, x, y: F.huber_loss(x * 2, y), t(3, 4), t(3, 4)),
    case("huber_loss_delta", lambda L, F, x, y: F.huber_loss(x, y, reduction="none", delta=0.4), t(3, 4), t(3, 4)),
    case("kl_div_batchmean", lambda L, F, x, y: F.kl_div(x, y, reduction="batchmean"), t(3, 4, kind="logprob"),
         t(3, 4, kind="prob")),
    case("kl_div_sum", lambda L, F, x, y: F.kl_div(x, y, reduction="sum"), t(3, 4, kind="logprob"),
         t(3, 4, kind="prob")),
    case("kl_div_log_target", lambda L, F, x, y: F.kl_div(x, y, reduction="none", log_target=True),
         t(3, 4, kind="logprob"), t(3, 4, kind="logprob")),
]

DIFFERENTIABLE = [c for c in CASES if c.fd]


def _check_against_torch(rng, c):
    ours_in, theirs_in = both(rng, c.inputs)
    ours, theirs = outputs(c.fn(pn, PF, *ours_in)), outputs(c.fn(torch, TF, *theirs_in))
    assert len(ours) == len(theirs)
    for o, r in zip(ours, theirs):
        ref = r.detach().numpy()
        assert tuple(o.shape) == tuple(r.shape), f"{c.name}: shape {o.shape} != torch's {tuple(r.shape)}"
        assert o.dtype == np.dtype(str(r.dtype).replace("torch.", "")), f"{c.name}: dtype {o.dtype} vs {r.dtype}"
        np.testing.assert_allclose(o.data, ref, rtol=c.rtol, atol=1e-12, equal_nan=True, err_msg=c.name)
    # a cotangent times an infinite output (logsumexp over nothing) has no gradient to compare
    pairs = [(o, r) for o, r in zip(ours, theirs) if r.requires_grad and torch.isfinite(r).all()]
    if not pairs:
        return
    total_ours = total_theirs = 0
    for o, r in pairs:
        v = rng.standard_normal(tuple(r.shape))
        total_ours = total_ours + (o * pn.tensor(v, dtype=pn.float64)).sum()
        total_theirs = total_theirs + (r * torch.tensor(v)).sum()
    total_ours.backward()
    total_theirs.backward()
    for i, (a, b) in enumerate(zip(ours_in, theirs_in)):
        if not b.requires_grad:
            continue
        assert (a.grad is None) == (b.grad is None), f"{c.name}: input {i} gradient presence differs"
        if b.grad is not None:
            np.testing.assert_allclose(a.grad.data, b.grad.numpy(), rtol=c.rtol, atol=1e-11,
                                       err_msg=f"{c.name}: gradient of input {i}")


@pytest.mark.parametrize("c", CASES, ids=[c.name for c in CASES])
def test_op_against_torch(rng, c):
    _check_against_torch(rng, c)


@pytest.mark.parametrize("c", DIFFERENTIABLE, ids=[c.name for c in DIFFERENTIABLE])
def test_op_gradcheck(rng, c):
    """Finite differences in float64 against pyneural's own backward."""
    ours_in, _ = both(rng, c.inputs)
    if not any(x.requires_grad for x in ours_in):
        pytest.skip("no differentiable input")

    def fn(*xs):
        return tuple(o for o in outputs(c.fn(pn, PF, *xs)) if o.is_floating_point())
    assert pn.gradcheck(fn, ours_in, atol=1e-6, rtol=1e-4)


def test_table_size():
    # The table is the op surface's record: losing a case by accident shows up here.
    assert len(CASES) >= 150 and len({c.name for c in CASES}) == len(CASES)


# ---- zero-size inputs ---------------------------------------------------------------------------

EMPTY = [
    case("sum", lambda L, F, a: a.sum(), t(0, 3)),
    case("sum_dim", lambda L, F, a: a.sum(0), t(0, 3)),
    case("mean", lambda L, F, a: a.mean(), t(0, 3)),
    case("mean_dim", lambda L, F, a: a.mean(0), t(0, 3)),
    case("var_dim", lambda L, F, a: a.var(1), t(0, 3)),
    case("logsumexp", lambda L, F, a: a.logsumexp(0), t(0, 3)),
    case("max_nonempty_dim", lambda L, F, a: a.max(1), t(0, 3)),
    case("cumsum", lambda L, F, a: a.cumsum(0), t(0, 3)),
    case("softmax", lambda L, F, a: a.softmax(1), t(0, 3)),
    case("log_softmax", lambda L, F, a: F.log_softmax(a, 0), t(3, 0)),
    case("relu", lambda L, F, a: F.relu(a), t(0, 3)),
    case("sort", lambda L, F, a: a.sort(0), t(0, 3)),
    case("topk_0", lambda L, F, a: a.topk(0), t(2, 3)),
    case("matmul_rows", lambda L, F, a, b: a @ b, t(0, 3), t(3, 4)),
    case("matmul_inner", lambda L, F, a, b: a @ b, t(2, 0), t(0, 4)),
    case("matmul_batched", lambda L, F, a, b: a @ b, t(0, 2, 3), t(3, 4)),
    case("linear", lambda L, F, a, w, b: F.linear(a, w, b), t(0, 4), t(3, 4), t(3)),
    case("linear_3d", lambda L, F, a, w: F.linear(a, w), t(2, 0, 4), t(3, 4)),
    case("index_list", lambda L, F, a: a[[]], t(4, 3)),
    case("index_select", lambda L, F, a, i: a.index_select(0, i[:0]), t(4, 3), t(2, kind="index4")),
    case("gather", lambda L, F, a, i: a.gather(1, i[:, :0]), t(4, 3), t(4, 2, kind="index3")),
    case("cat_empty", lambda L, F, a, b: L.cat([a, b]), t(0, 3), t(2, 3)),
    case("split", lambda L, F, a: a.split(2), t(0, 3)),
    case("pad", lambda L, F, a: F.pad(a, (1, 1)), t(0, 3)),
    case("cross_entropy_mean", lambda L, F, a, y: F.cross_entropy(a, y), t(0, 3), t(0, kind="index3")),
    case("cross_entropy_sum", lambda L, F, a, y: F.cross_entropy(a, y, reduction="sum"), t(0, 3),
         t(0, kind="index3")),
    case("nll_loss", lambda L, F, a, y: F.nll_loss(a, y), t(0, 3), t(0, kind="index3")),
    case("mse_loss", lambda L, F, a, b: F.mse_loss(a, b), t(0), t(0)),
    case("l1_loss_sum", lambda L, F, a, b: F.l1_loss(a, b, reduction="sum"), t(0), t(0)),
    case("bce", lambda L, F, a, b: F.binary_cross_entropy(a, b), t(0, kind="unit"), t(0, kind="unit")),
    case("kl_div", lambda L, F, a, b: F.kl_div(a, b, reduction="batchmean"), t(0, 2), t(0, 2)),
    case("any_all", lambda L, F, a: (a > 0).any() | ~(a > 0).all(), t(0, 3), fd=False),
]


@pytest.mark.parametrize("c", EMPTY, ids=[c.name for c in EMPTY])
def test_empty_against_torch(rng, c):
    with warnings.catch_warnings():  # var over nothing warns in both libraries
        warnings.simplefilter("ignore", UserWarning)
        _check_against_torch(rng, c)


def test_linear_module_on_an_empty_batch():
    layer = pn.nn.Linear(4, 3)
    y = layer(pn.randn(0, 4))
    assert y.shape == (0, 3)
    y.sum().backward()
    assert layer.weight.grad.shape == (3, 4) and not layer.weight.grad.data.any()
    assert layer.bias.grad.shape == (3,)


def test_empty_reductions_without_identity_raise():
    x = pn.randn(0, 3)
    with pytest.raises(RuntimeError, match="numel\\(\\) == 0"):
        x.max()
    with pytest.raises(IndexError, match="reduction dim 0"):
        x.max(0)
    with pytest.raises(IndexError, match="reduction dim 0"):
        x.argmax(0)


# ---- type promotion ----------------------------------------------------------------------------

def _promotion_operands(L):
    return {
        "f32": L.ones(3), "f64": L.ones(3, dtype=L.float64), "i64": L.ones(3, dtype=L.int64),
        "i32": L.ones(3, dtype=L.int32), "b": L.ones(3, dtype=L.bool), "f64_0d": L.tensor(2.0, dtype=L.float64),
        "i64_0d": L.tensor(2), "f32_0d": L.tensor(2.0),
    }


PROMOTIONS = [
    ("f32", "*", "i64"), ("i64", "*", 0.5), ("i64", "/", "i64"), ("i32", "/", 2), ("b", "+", 1), ("b", "+", True),
    ("i32", "+", "i64_0d"), ("f32", "+", "f64_0d"), ("i64", "+", "f32_0d"), ("f32", "+", "f64"),
    ("i64", "**", 0.5), (2, "**", "i64"), (2.0, "**", "i64"), ("i32", "*", 2.5), ("b", "*", "f32"),
    ("i64", "-", 1.5), ("f64_0d", "*", "i32"), ("i32", "max", "f32"), ("i64", "where", 0.5),
]


def _apply(op, a, b, L):
    if op == "max":
        return L.maximum(a, b)
    if op == "where":
        return L.where(a > 0, a, b)
    return {"*": lambda: a * b, "/": lambda: a / b, "+": lambda: a + b, "-": lambda: a - b,
            "**": lambda: a ** b}[op]()


@pytest.mark.parametrize("left,op,right", PROMOTIONS, ids=[f"{a}{op}{b}" for a, op, b in PROMOTIONS])
def test_result_dtype_against_torch(left, op, right):
    results = []
    for L in (pn, torch):
        ops = _promotion_operands(L)
        a, b = (ops[v] if isinstance(v, str) else v for v in (left, right))
        results.append(str(_apply(op, a, b, L).dtype).replace("torch.", ""))
    assert results[0] == results[1]


def test_result_type_function():
    assert pn.result_type(pn.ones(2, dtype=pn.int32), 2.5) == np.float32
    assert pn.promote_types(np.int64, np.float32) == np.float32   # numpy would say float64


# ---- modules -----------------------------------------------------------------------------------

MODULES = [
    ("LeakyReLU", lambda nn: nn.LeakyReLU(0.3), [t(3, 4, kind="away")]),
    ("ELU", lambda nn: nn.ELU(alpha=0.5), [t(3, 4, kind="away")]),
    ("SELU", lambda nn: nn.SELU(), [t(3, 4, kind="away")]),
    ("SiLU", lambda nn: nn.SiLU(), [t(3, 4)]),
    ("Softplus", lambda nn: nn.Softplus(beta=2.0, threshold=1.0), [t(3, 4, kind="away")]),
    ("Hardtanh", lambda nn: nn.Hardtanh(-0.5, 0.5), [t(3, 4)]),
    ("ReLU6", lambda nn: nn.ReLU6(), [t(3, 4, kind="away")]),
    ("Hardsigmoid", lambda nn: nn.Hardsigmoid(), [t(3, 4)]),
    ("Hardswish", lambda nn: nn.Hardswish(), [t(3, 4)]),
    ("Mish", lambda nn: nn.Mish(), [t(3, 4)]),
    ("Softmax", lambda nn: nn.Softmax(dim=0), [t(3, 4)]),
    ("LogSoftmax", lambda nn: nn.LogSoftmax(dim=-1), [t(3, 4)]),
    ("CrossEntropyLoss", lambda nn: nn.CrossEntropyLoss(label_smoothing=0.1), [t(5, 4), t(5, kind="index4")]),
    ("CrossEntropyLossProbs", lambda nn: nn.CrossEntropyLoss(), [t(5, 4), t(5, 4, kind="prob")]),
    ("NLLLoss", lambda nn: nn.NLLLoss(reduction="sum"), [t(5, 4, kind="logprob"), t(5, kind="index4")]),
    ("BCELoss", lambda nn: nn.BCELoss(), [t(3, 4, kind="unit"), t(3, 4, kind="unit")]),
    ("BCEWithLogitsLoss", lambda nn: nn.BCEWithLogitsLoss(), [t(3, 4), t(3, 4, kind="unit")]),
    ("L1Loss", lambda nn: nn.L1Loss(), [t(3, 4), t(3, 4)]),
    ("MSELoss", lambda nn: nn.MSELoss(reduction="sum"), [t(3, 4), t(3, 4)]),
    ("SmoothL1Loss", lambda nn: nn.SmoothL1Loss(beta=0.5), [t(3, 4), t(3, 4)]),
    ("HuberLoss", lambda nn: nn.HuberLoss(delta=0.5), [t(3, 4), t(3, 4)]),
    ("KLDivLoss", lambda nn: nn.KLDivLoss(reduction="batchmean", log_target=True),
     [t(3, 4, kind="logprob"), t(3, 4, kind="logprob")]),
]


@pytest.mark.parametrize("name,make,inputs", MODULES, ids=[m[0] for m in MODULES])
def test_module_against_torch(rng, name, make, inputs):
    c = case(name, lambda L, F, *xs: make(L.nn)(*xs), *inputs, rtol=1e-7 if name == "Hardsigmoid" else 1e-9)
    _check_against_torch(rng, c)


def test_weighted_loss_modules_carry_their_weights(rng):
    w = rng.uniform(0.5, 2.0, 4)
    ours = pn.nn.CrossEntropyLoss(weight=pn.tensor(w, dtype=pn.float64))
    assert "weight" in dict(ours.named_buffers())
    pw = pn.nn.BCEWithLogitsLoss(pos_weight=pn.tensor(w, dtype=pn.float64))
    assert "pos_weight" in dict(pw.named_buffers())
    x = rng.standard_normal((6, 4))
    y = rng.integers(0, 4, 6)
    got = ours(pn.tensor(x, dtype=pn.float64), pn.tensor(y)).item()
    ref = torch.nn.CrossEntropyLoss(weight=torch.tensor(w))(torch.tensor(x), torch.tensor(y)).item()
    assert abs(got - ref) < 1e-12


def test_legacy_reduction_flags_warn_like_torch():
    with pytest.warns(UserWarning, match="size_average and reduce"):
        loss = pn.nn.MSELoss(size_average=False)
    assert loss.reduction == "sum"
    with pytest.warns(UserWarning, match="'mean' divides the total loss"):
        PF.kl_div(pn.zeros(2, 3), pn.ones(2, 3) / 3)


def test_softmax_module_implicit_dim_warns():
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        y = pn.nn.Softmax()(pn.randn(2, 3))
    np.testing.assert_allclose(y.data.sum(1), 1, rtol=1e-6)


# ---- bad inputs ----------------------------------------------------------------------------------

BAD = [
    ("matmul_shapes", lambda: pn.ones(3, 4) @ pn.ones(5), ValueError, r"\(3, 4\) and \(5,\)"),
    ("matmul_batch", lambda: pn.ones(2, 3, 4) @ pn.ones(3, 4, 5), ValueError, "batch dimensions"),
    ("matmul_dtypes", lambda: pn.ones(2, 3) @ pn.ones(3, 2, dtype=pn.float64), TypeError, "float32 and float64"),
    ("matmul_0d", lambda: pn.tensor(2.0) @ pn.ones(2), ValueError, "at least 1 dimension"),
    ("bmm_rank", lambda: pn.bmm(pn.ones(3, 4), pn.ones(4, 2)), ValueError, "3-D"),
    ("dot_rank", lambda: pn.dot(pn.ones(3, 4), pn.ones(4)), ValueError, "1-D"),
    ("gather_index_dtype", lambda: pn.ones(3, 4).gather(1, pn.ones(3, 4)), TypeError, "integer"),
    ("gather_index_rank", lambda: pn.ones(3, 4).gather(1, pn.tensor([0, 1])), RuntimeError, "dimensions"),
    ("gather_index_range", lambda: pn.ones(3, 4).gather(1, pn.tensor([[4], [0], [0]])), IndexError,
     "index 4 is out of bounds for dimension 1 with size 4"),
    ("gather_negative_index", lambda: pn.ones(3, 4).gather(0, pn.tensor([[-1]])), IndexError, "index -1"),
    ("scatter_src_dtype", lambda: pn.ones(3, 4).scatter(1, pn.tensor([[0]]), pn.ones(1, 1, dtype=pn.float64)),
     TypeError, "dtype"),
    ("scatter_reduce", lambda: pn.ones(3).scatter(0, pn.tensor([0]), pn.ones(1), reduce="mean"), ValueError,
     "reduce"),
    ("index_select_2d", lambda: pn.ones(3, 4).index_select(0, pn.tensor([[0]])), RuntimeError, "0-d or 1-d"),
    ("masked_fill_mask_dtype", lambda: pn.ones(3).masked_fill(pn.ones(3), 0.0), TypeError, "bool"),
    ("masked_fill_mask_shape", lambda: pn.ones(3).masked_fill(pn.ones(2, dtype=pn.bool), 0.0), ValueError,
     "broadcast"),
    ("masked_fill_value_shape", lambda: pn.ones(3).masked_fill(pn.ones(3, dtype=pn.bool), pn.ones(3)),
     RuntimeError, "0-dimensional"),
    ("split_sections", lambda: pn.ones(5).split([2, 2]), ValueError, "sum to the length 5"),
    ("chunk_zero", lambda: pn.ones(5).chunk(0), ValueError, "positive"),
    ("repeat_too_few", lambda: pn.ones(2, 3).repeat(2), ValueError, "can't be smaller"),
    ("expand_leading_minus_one", lambda: pn.ones(3).expand(-1, 3), ValueError, "leading"),
    ("flip_twice", lambda: pn.ones(2, 3).flip(0, 0), ValueError, "twice"),
    ("roll_lengths", lambda: pn.ones(2, 3).roll((1, 2), 0), ValueError, "same length"),
    ("topk_k", lambda: pn.ones(2, 3).topk(4), RuntimeError, "k=4 out of range"),
    ("sort_dim", lambda: pn.ones(2, 3).sort(2), IndexError, "out of range"),
    ("pad_odd", lambda: PF.pad(pn.ones(1, 1, 3, 3), (1, 1, 1)), ValueError, "even"),
    ("pad_mode", lambda: PF.pad(pn.ones(1, 1, 3, 3), (1, 1), mode="wrap"), ValueError, "mode"),
    ("pad_reflect_too_big", lambda: PF.pad(pn.ones(1, 1, 3, 3), (3, 0, 0, 0), mode="reflect"), ValueError,
     "too large"),
    ("pad_circular_too_big", lambda: PF.pad(pn.ones(1, 1, 3, 3), (4, 0, 0, 0), mode="circular"), ValueError,
     "too large"),
    ("pad_reflect_4d_len2", lambda: PF.pad(pn.ones(1, 1, 3, 3), (1, 1), mode="reflect"), ValueError,
     "not supported for 4D"),
    ("pad_value_non_constant", lambda: PF.pad(pn.ones(1, 3, 3), (1, 1), mode="replicate", value=1.0), ValueError,
     "value"),
    ("clamp_no_bounds", lambda: pn.ones(3).clamp(), ValueError, "at least one"),
    ("var_both_corrections", lambda: pn.ones(3).var(unbiased=True, correction=0), TypeError, "either"),
    ("var_integer", lambda: pn.ones(3, dtype=pn.int64).var(), TypeError, "floating point"),
    ("logical_bitwise_float", lambda: pn.ones(3) & pn.ones(3), TypeError, "bool or integer"),
    ("neg_bool", lambda: -pn.ones(3, dtype=pn.bool), TypeError, "logical_not"),
    ("hardtanh_bounds", lambda: PF.hardtanh(pn.ones(3), 1.0, -1.0), ValueError, "min_val"),
    ("softmax_dim", lambda: PF.softmax(pn.ones(2, 3), dim=2), IndexError, "out of range"),
    ("cross_entropy_probs_ignore", lambda: PF.cross_entropy(pn.ones(2, 3), pn.ones(2, 3) / 3, ignore_index=1),
     ValueError, "ignore_index is not supported"),
    ("cross_entropy_target_range", lambda: PF.cross_entropy(pn.ones(2, 3), pn.tensor([0, 3]), weight=pn.ones(3)),
     IndexError, "target 3 is out of bounds for 3 classes"),
    ("cross_entropy_weight_shape", lambda: PF.cross_entropy(pn.ones(2, 3), pn.tensor([0, 1]), weight=pn.ones(4)),
     ValueError, r"weight has shape \(4,\), expected \(3,\)"),
    ("nll_target_shape", lambda: PF.nll_loss(pn.ones(2, 3), pn.tensor([0, 1, 2])), ValueError, "target has shape"),
    ("bce_range", lambda: PF.binary_cross_entropy(pn.full((2,), 1.5), pn.ones(2)), RuntimeError, "between 0 and 1"),
    ("bce_shape", lambda: PF.binary_cross_entropy(pn.full((2,), 0.5), pn.ones(2, 1)), ValueError, "same size"),
    ("bce_logits_shape", lambda: PF.binary_cross_entropy_with_logits(pn.ones(2), pn.ones(3)), ValueError,
     "same as input size"),
    ("mse_no_broadcast", lambda: PF.mse_loss(pn.ones(3, 4), pn.ones(4, 3)), ValueError, "do not broadcast"),
    ("smooth_l1_beta", lambda: PF.smooth_l1_loss(pn.ones(2), pn.ones(2), beta=-1.0), ValueError, "beta"),
    ("huber_delta", lambda: PF.huber_loss(pn.ones(2), pn.ones(2), delta=0.0), ValueError, "delta"),
    ("kl_div_reduction", lambda: PF.kl_div(pn.ones(2), pn.ones(2), reduction="avg"), ValueError, "reduction"),
    ("loss_reduction", lambda: PF.l1_loss(pn.ones(2), pn.ones(2), reduction="avg"), ValueError, "reduction"),
]


@pytest.mark.parametrize("name,call,error,match", BAD, ids=[b[0] for b in BAD])
def test_bad_input(name, call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_mse_broadcast_warns_like_torch():
    with pytest.warns(UserWarning, match="different to the input size"):
        out = PF.mse_loss(pn.ones(3, 1), pn.zeros(3))
    assert out.item() == 1.0


# ---- on the CUDA device (a real GPU, or the emulated one) ---------------------------------------

def _on_device(t):
    d = pn.Tensor(t.to("cuda").data)
    return d.requires_grad_(True) if t.requires_grad else d


@pytest.mark.cuda
@pytest.mark.parametrize("c", CASES + EMPTY, ids=[f"{c.name}" for c in CASES] + [f"empty_{c.name}" for c in EMPTY])
def test_op_on_the_device_matches_the_host(cuda_xp, rng, c):
    """The same expression on device tensors: results stay on the device and agree with the
    host's (float64, so within rounding; the float32 case within float32's)."""
    host_in, _ = both(rng, c.inputs)
    dev_in = [_on_device(t) for t in host_in]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ref, got = outputs(c.fn(pn, PF, *host_in)), outputs(c.fn(pn, PF, *dev_in))
    # float64 agrees to rounding; float32 kernels (softmax) to a few ulps of values and gradients of order 1
    single = c.rtol > 1e-9 or any(r.dtype == np.float32 for r in ref)  # rtol: a float32 step inside
    tol = dict(rtol=1e-5, atol=1e-6) if single else dict(rtol=1e-9, atol=1e-9)
    for r, g in zip(ref, got):
        assert g.device == "cuda" and g.shape == r.shape and g.dtype == r.dtype, c.name
        np.testing.assert_allclose(g.cpu().data, r.data, equal_nan=True, err_msg=c.name, **tol)
    pairs = [(r, g) for r, g in zip(ref, got) if r.requires_grad and np.isfinite(r.data).all()]
    if not pairs:
        return
    cotangents = [rng.standard_normal(r.shape) for r, _ in pairs]
    sum((r * pn.tensor(v, dtype=r.dtype)).sum() for (r, _), v in zip(pairs, cotangents)).backward()
    sum((g * pn.tensor(v, dtype=g.dtype).to("cuda")).sum() for (_, g), v in zip(pairs, cotangents)).backward()
    for h, d in zip(host_in, dev_in):
        if h.requires_grad and h.grad is not None:
            assert d.grad.device == "cuda"
            np.testing.assert_allclose(d.grad.cpu().data, h.grad.data, err_msg=c.name, **tol)
