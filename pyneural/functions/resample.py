"""Separable resampling of NCHW planes: the pooling the fixed-window kernels do not cover (adaptive
windows, dilation, ceil mode, divisor_override) and interpolation (nearest, bilinear).

Every one of these ops acts on the H axis and on the W axis independently. An :class:`AxisMap`
says, for each output position along one axis, which input positions it reads (``taps``, (out, T)
int64) and with which weights (``weights``, (out, T); 0 for the fillers that pad a shorter window
to T, which repeat a real tap of the window). A 2-D op is one map per axis applied in turn: a gather
of the taps (``take``) and a weighted sum over them (average pooling, interpolation), or a max over
them (max pooling; a max over a rectangle is the max over its rows of the max within each row).

Backward applies the transposed maps, built on the host from the same tables: for each input
position, the outputs that read it (``members``, (in, K)) and with which weights. So the gradient is
a gather too: no scatter-add (no atomics, no ``ufunc.at``), deterministic, and the same whole-array
code on numpy, CuPy and the emulated device.
"""
import numpy as np

from pyneural.tensor import Function, get_array_module


class AxisMap:
    """A linear (or max) map from ``in_size`` positions to ``taps.shape[0]`` along one axis."""

    __slots__ = ("in_size", "taps", "weights", "members", "member_weights")

    def __init__(self, in_size, taps, weights):
        self.in_size = int(in_size)
        self.taps, self.weights = np.asarray(taps, np.int64), np.asarray(weights, np.float64)
        if self.taps.size and (self.taps.min() < 0 or self.taps.max() >= self.in_size):
            raise ValueError(f"AxisMap: taps outside [0, {self.in_size})")
        self.members, self.member_weights = self._transpose()

    @property
    def out_size(self):
        return self.taps.shape[0]

    def _transpose(self):
        """(in, K) output indices reading each input position and their weights, K the most any reads."""
        out, T = self.taps.shape
        outputs = np.repeat(np.arange(out), T)
        inputs, weights = self.taps.reshape(-1), self.weights.reshape(-1)
        real = weights != 0
        outputs, inputs, weights = outputs[real], inputs[real], weights[real]
        order = np.argsort(inputs, kind="stable")
        outputs, inputs, weights = outputs[order], inputs[order], weights[order]
        counts = np.bincount(inputs, minlength=self.in_size)
        first = np.concatenate(([0], np.cumsum(counts)[:-1]))
        rank = np.arange(inputs.size) - first[inputs]
        K = max(int(counts.max(initial=0)), 1)
        members = np.zeros((self.in_size, K), np.int64)
        member_weights = np.zeros((self.in_size, K), np.float64)
        members[inputs, rank] = outputs
        member_weights[inputs, rank] = weights
        return members, member_weights


def _from_windows(in_size, starts, lengths, step, scale):
    """The map whose output i reads ``starts[i] + step * j`` for the j < lengths[i] that fall inside
    [0, in_size), each with weight ``scale[i]``."""
    T = int(lengths.max())
    j = np.arange(T)
    taps = starts[:, None] + step * j[None, :]
    real = (j[None, :] < lengths[:, None]) & (taps >= 0) & (taps < in_size)
    if not real.any(axis=1).all():
        raise ValueError(f"resample: a window reads no input position (input size {in_size})")
    first_real = taps[np.arange(taps.shape[0]), real.argmax(axis=1)]
    taps = np.where(real, taps, first_real[:, None])
    return AxisMap(in_size, taps, np.where(real, scale[:, None], 0.0))


def pool_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    """PyTorch's pooling output size: floor or ceil of the window count, and in ceil mode the last
    window must start inside the input or the left padding."""
    span = dilation * (kernel - 1) + 1
    out = -(-(size + 2 * padding - span) // stride) + 1 if ceil_mode else (size + 2 * padding - span) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def pool_map(size, kernel, stride, padding, dilation, ceil_mode, divisor="taps"):
    """The windows of a pooling layer along one axis, weighted 1/divisor: ``"taps"`` counts the input
    positions in the window (count_include_pad=False, and max pooling), ``"padded"`` the window clipped
    to the padded input (count_include_pad=True), ``None`` weights every tap 1."""
    out = pool_output_size(size, kernel, stride, padding, dilation, ceil_mode)
    starts = np.arange(out) * stride - padding
    lengths = np.full(out, kernel)
    if divisor == "padded":
        scale = 1.0 / (np.minimum(starts + kernel, size + padding) - starts)
    elif divisor == "taps":
        inside = starts[:, None] + dilation * np.arange(kernel)[None, :]
        scale = 1.0 / ((inside >= 0) & (inside < size)).sum(axis=1)
    else:
        scale = np.ones(out)
    return _from_windows(size, starts, lengths, dilation, scale)


def adaptive_map(size, out):
    """PyTorch's adaptive pooling windows: output i covers [floor(i*size/out), ceil((i+1)*size/out))."""
    i = np.arange(out)
    starts = (i * size) // out
    ends = -((-(i + 1) * size) // out)
    return _from_windows(size, starts, ends - starts, 1, 1.0 / (ends - starts))


def nearest_map(size, out, scale_factor=None):
    """PyTorch's 'nearest': output i reads input min(floor(i * scale), size - 1), with scale =
    1/scale_factor when one is given, else size/out, in float32 whatever the dtype (as PyTorch's
    kernel does); a same-size or doubling map is exact."""
    i = np.arange(out)
    if out == size:
        src = i
    elif out == 2 * size:
        src = i >> 1
    else:
        scale = np.float32(1.0 / scale_factor) if scale_factor else np.float32(size) / np.float32(out)
        src = np.minimum(np.floor(i.astype(np.float32) * scale).astype(np.int64), size - 1)
    return AxisMap(size, src[:, None], np.ones((out, 1)))


def linear_map(size, out, scale_factor, align_corners, dtype):
    """PyTorch's linear interpolation along one axis (bilinear is one per axis): the source coordinate
    is ``i * (size-1)/(out-1)`` with align_corners, else ``(i + 0.5) * scale - 0.5`` clamped at 0
    (scale = 1/scale_factor or size/out); its two neighbours share the weight. Computed in float64
    for float64 inputs and float32 otherwise, as PyTorch's kernel does."""
    t = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    i = np.arange(out).astype(t)
    if align_corners:
        src = i * (t(size - 1) / t(out - 1) if out > 1 else t(0))
    else:
        scale = t(1.0 / scale_factor) if scale_factor else t(size) / t(out)
        src = np.maximum((i + t(0.5)) * scale - t(0.5), t(0))
    low = np.minimum(np.floor(src).astype(np.int64), size - 1)
    high = low + (low < size - 1)
    frac = np.clip(src - low.astype(t), 0, 1).astype(np.float64)
    return AxisMap(size, np.stack([low, high], axis=1), np.stack([1.0 - frac, frac], axis=1))


# ---- applying maps along an axis ------------------------------------------------------------------

def _on_device(xp, a):
    return a if xp is np else xp.asarray(a)


def _gather(x, taps, axis):
    """x's positions ``taps`` (out, T) along ``axis``: shape x.shape[:axis] + (out, T) + x.shape[axis+1:]."""
    xp = get_array_module(x)
    g = xp.take(x, taps.reshape(-1), axis=axis)
    return g.reshape(x.shape[:axis] + taps.shape + x.shape[axis + 1:])


def _weighted(x, taps, weights, axis):
    g = _gather(x, taps, axis)
    return (g * weights.reshape(weights.shape + (1,) * (x.ndim - axis - 1))).sum(axis=axis + 1)


class _Maps:
    """The host tables of the two maps, copied to the device of ``x`` and cast to its dtype once."""

    def __init__(self, x, h_map, w_map):
        xp = get_array_module(x)
        self.h = [_on_device(xp, a) for a in (h_map.taps, h_map.weights.astype(x.dtype),
                                              h_map.members, h_map.member_weights.astype(x.dtype))]
        self.w = [_on_device(xp, a) for a in (w_map.taps, w_map.weights.astype(x.dtype),
                                              w_map.members, w_map.member_weights.astype(x.dtype))]


class Resample2d(Function):
    """y[n, c] = A_h @ x[n, c] @ A_w.T for the sparse matrices of two AxisMaps (and gx likewise with
    their transposes); ``scale`` multiplies the result (avg pooling's divisor_override)."""

    def __init__(self, h_map, w_map, scale=1.0):
        self.h_map, self.w_map, self.scale = h_map, w_map, scale

    def forward(self, x):
        self.maps = m = _Maps(x, self.h_map, self.w_map)
        # The axis that shrinks more goes first: the intermediate array stays the smaller one.
        h_first = self.h_map.out_size * x.shape[3] <= x.shape[2] * self.w_map.out_size
        y = _separable(x, m.h[:2], m.w[:2], h_first)
        return y * self.scale if self.scale != 1.0 else y

    def backward(self, gy):
        m = self.maps
        h_first = self.h_map.in_size * gy.shape[3] <= gy.shape[2] * self.w_map.in_size
        gx = _separable(gy, m.h[2:], m.w[2:], h_first)
        return (gx * self.scale if self.scale != 1.0 else gx,)


def _separable(x, h, w, h_first):
    if h_first:
        return _weighted(_weighted(x, *h, 2), *w, 3)
    return _weighted(_weighted(x, *w, 3), *h, 2)


def _max_along(x, taps, axis):
    """(max over each output's taps, the input index along ``axis`` that holds it); the first such tap
    on ties, and NaN wins."""
    xp = get_array_module(x)
    g = _gather(x, taps, axis)
    k = g.argmax(axis=axis + 1)
    out_index = xp.arange(taps.shape[0]).reshape((-1,) + (1,) * (x.ndim - axis - 1))
    return g.max(axis=axis + 1), taps[out_index, k]


class MaxResample2d(Function):
    """Max over the rectangles of two AxisMaps (windows: the taps of weight != 0). Forward keeps the
    flat index h*W + w of each max (first in row-major order on ties); backward gathers, for every
    input position, the gradients of the windows whose max it is."""

    def __init__(self, h_map, w_map):
        self.h_map, self.w_map = h_map, w_map

    def forward(self, x):
        xp = get_array_module(x)
        self.maps = m = _Maps(x, self.h_map, self.w_map)
        row_max, col = _max_along(x, m.w[0], 3)          # (N, C, H, Wo): the first max within each row
        y, row = _max_along(row_max, m.h[0], 2)           # (N, C, Ho, Wo): the first row holding it
        self.flat = row * x.shape[3] + xp.take_along_axis(col, row, axis=2)
        return y

    def backward(self, gy):
        xp = get_array_module(gy)
        m = self.maps
        h, w = self.h_map.in_size, self.w_map.in_size
        (mh, vh), (mw, vw) = m.h[2:], m.w[2:]
        g = _gather(_gather(gy, mh, 2).reshape(gy.shape[:2] + (-1, gy.shape[3])), mw, 3)
        flat = _gather(_gather(self.flat, mh, 2).reshape(gy.shape[:2] + (-1, gy.shape[3])), mw, 3)
        shape = gy.shape[:2] + (h, mh.shape[1], w, mw.shape[1])
        position = (xp.arange(h).reshape(h, 1, 1, 1) * w + xp.arange(w).reshape(1, 1, w, 1))
        chosen = (flat.reshape(shape) == position) & (vh != 0).reshape(h, -1, 1, 1) & (vw != 0).reshape(1, 1, w, -1)
        return ((g.reshape(shape) * chosen).sum(axis=(3, 5)),)


# ---- interpolation ----------------------------------------------------------------------------------

def _per_axis(fn, name, value, kind):
    values = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(values) != 2 or not all(isinstance(v, kind) and not isinstance(v, bool) and v > 0 for v in values):
        raise ValueError(f"{fn}: {name} must be a positive number or a pair of them for a 4-D input, got {value!r}")
    return values


def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None):
    """Resize the planes of (N, C, H, W) to ``size`` or by ``scale_factor`` (output floor(H * factor))
    with PyTorch's 'nearest' or 'bilinear' (align_corners False by default). A given scale_factor is
    also the one the sampling uses unless ``recompute_scale_factor`` (then it is H_out / H)."""
    fn = "interpolate"
    shape = x.data.shape
    if len(shape) != 4:
        raise ValueError(f"{fn}: expected input (N, C, H, W), got shape {shape}")
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"{fn}: mode must be 'nearest' or 'bilinear', got {mode!r}")
    if align_corners is not None and mode == "nearest":
        raise ValueError(f"{fn}: align_corners can only be set with mode='bilinear'")
    if (size is None) == (scale_factor is None):
        raise ValueError(f"{fn}: give exactly one of size and scale_factor, got size={size!r}, "
                         f"scale_factor={scale_factor!r}")
    if size is not None:
        out, factors = _per_axis(fn, "size", size, (int, np.integer)), (None, None)
    else:
        factors = tuple(float(f) for f in _per_axis(fn, "scale_factor", scale_factor, (int, float, np.number)))
        out = tuple(int(np.floor(shape[2 + d] * factors[d])) for d in range(2))
        if min(out) < 1:
            raise ValueError(f"{fn}: scale_factor {scale_factor} makes an empty output {out} from input {shape}")
        if recompute_scale_factor:
            factors = (None, None)
    if mode == "nearest":
        maps = [nearest_map(shape[2 + d], int(out[d]), factors[d]) for d in range(2)]
    else:
        maps = [linear_map(shape[2 + d], int(out[d]), factors[d], bool(align_corners), x.data.dtype) for d in range(2)]
    return Resample2d(*maps).apply(x)
