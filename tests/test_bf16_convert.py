"""pyneural.kernels.bf16 conversions: bit for bit what ml_dtypes' own float32 <-> bfloat16 casts give
(round to nearest even, NaN -> a quiet NaN), on every conversion path this CPU has."""
import ml_dtypes
import numpy as np
import pytest

from pyneural.kernels import bf16

PATHS = bf16.available_convert_paths()

# float32 bit patterns where a conversion is most easily wrong, each with what it must become.
SPECIALS = {
    0x00000000: 0x0000, 0x80000000: 0x8000,          # +-0
    0x7F800000: 0x7F80, 0xFF800000: 0xFF80,          # +-inf
    0x7FC00000: 0x7FC0, 0xFFC00000: 0xFFC0,          # quiet NaN
    0x7FC12345: 0x7FC0, 0xFFA00001: 0xFFC0,          # NaN payloads are not kept (ml_dtypes)
    0x7F800001: 0x7FC0,                               # payload only in the low bits: NaN, not inf
    0x00000001: 0x0000, 0x00008000: 0x0000,          # subnormals: tie to even (down) ...
    0x00018000: 0x0002, 0x00008001: 0x0001,          # ... tie to even (up), just over the tie
    0x007FFFFF: 0x0080, 0x80010000: 0x8001,          # largest subnormal rounds up to the smallest normal
    0x00800000: 0x0080,                               # smallest normal
    0x3F808000: 0x3F80, 0x3F818000: 0x3F82,          # normal ties, both ways
    0x3F807FFF: 0x3F80, 0x3F808001: 0x3F81,
    0x7F7FFFFF: 0x7F80, 0x7F7F7FFF: 0x7F7F,          # past the largest bf16: inf; just under: stays
}


@pytest.fixture(params=PATHS)
def path(request):
    return request.param


def expected_bits(x):
    return x.astype(ml_dtypes.bfloat16).view(np.uint16)


def test_specials(path):
    bits = np.array(list(SPECIALS), dtype=np.uint32)
    out = bf16.to_bf16(bits.view(np.float32), path=path)
    assert out.dtype == bf16.bfloat16
    got = out.view(np.uint16)
    want = np.array(list(SPECIALS.values()), dtype=np.uint16)
    assert np.array_equal(got, want), [(hex(b), hex(g), hex(w)) for b, g, w in zip(bits, got, want) if g != w]
    with np.errstate(invalid="ignore"):
        assert np.array_equal(got, expected_bits(bits.view(np.float32)))


def test_specials_inside_full_vectors(path, rng):
    """The vector paths patch NaN and subnormal lanes of an otherwise ordinary 32-float block."""
    x = rng.standard_normal(96).astype(np.float32)
    special = np.array(list(SPECIALS), dtype=np.uint32).view(np.float32)
    x[7:7 + special.size] = special
    with np.errstate(invalid="ignore"):
        assert np.array_equal(bf16.to_bf16(x, path=path).view(np.uint16), expected_bits(x))


@pytest.mark.parametrize("n", [0, 1, 15, 16, 17, 31, 32, 33, 63, 1000])
def test_lengths(rng, path, n):
    """Every ragged end of the 32-wide vector loop; nothing past n is written."""
    x = rng.standard_normal(n).astype(np.float32)
    buffer = np.full(n + 40, 0x1234, dtype=np.uint16)
    from pyneural import _C
    _C.to_bf16(x, buffer[:n], path)
    assert np.array_equal(buffer[:n], expected_bits(x))
    assert np.all(buffer[n:] == 0x1234)


def test_random_bit_patterns(rng, path):
    """Uniform over all 2^32 patterns: about 0.4% NaN, 0.4% subnormal, the rest every exponent."""
    bits = rng.integers(0, 2**32, size=1 << 17, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    with np.errstate(invalid="ignore"):
        assert np.array_equal(bf16.to_bf16(x, path=path).view(np.uint16), expected_bits(x))


def test_random_values_all_scales(rng, path):
    # up to 10^37 x a normal draw (|z| < 6 in practice): below float32's max 3.4e38, so the cast never
    # overflows (an overflow warning would fail the test on an unlucky seed); inf is covered elsewhere
    x = (np.clip(rng.standard_normal(4096), -6, 6) * 10.0 ** rng.uniform(-44, 37, 4096)).astype(np.float32)
    assert np.array_equal(bf16.to_bf16(x, path=path).view(np.uint16), expected_bits(x))


def test_large_array_threaded(rng, path):
    """Past the threading threshold (2^18 elements), with an odd length so ranges end mid-vector."""
    x = rng.standard_normal((1 << 19) + 77).astype(np.float32)
    h = bf16.to_bf16(x, path=path)
    assert np.array_equal(h.view(np.uint16), expected_bits(x))
    assert np.array_equal(bf16.to_float32(h, path=path), h.astype(np.float32))


def test_to_float32_every_pattern(path):
    """All 65536 bf16 patterns widen exactly (NaN payloads too)."""
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(ml_dtypes.bfloat16)
    out = bf16.to_float32(h, path=path)
    assert out.dtype == np.float32
    assert np.array_equal(out.view(np.uint32), h.view(np.uint16).astype(np.uint32) << 16)


def test_shape_kept_and_non_contiguous_input(rng):
    x = rng.standard_normal((6, 10)).astype(np.float32)[:, ::3]
    h = bf16.to_bf16(x)
    assert h.shape == (6, 4)
    assert np.array_equal(h.view(np.uint16), expected_bits(x))
    assert np.array_equal(bf16.to_float32(h.T), h.T.astype(np.float32))


def test_round_trip_is_identity_on_bf16_values(rng):
    h = bf16.to_bf16(rng.standard_normal(1000).astype(np.float32))
    assert np.array_equal(bf16.to_bf16(bf16.to_float32(h)).view(np.uint16), h.view(np.uint16))


def test_rejects_float64():
    with pytest.raises(TypeError, match=r"to_bf16: a must have dtype float32, got float64 \(shape \(3,\)\)"):
        bf16.to_bf16(np.zeros(3))


def test_rejects_bf16_to_bf16():
    with pytest.raises(TypeError, match="to_bf16: a must have dtype float32, got bfloat16"):
        bf16.to_bf16(np.zeros(3, dtype=ml_dtypes.bfloat16))


def test_to_float32_rejects_float32():
    with pytest.raises(TypeError, match="to_float32: a must have dtype bfloat16, got float32"):
        bf16.to_float32(np.zeros(3, dtype=np.float32))


def test_rejects_non_array():
    with pytest.raises(TypeError, match="to_bf16: a must be a numpy.ndarray, got list"):
        bf16.to_bf16([1.0])


def test_rejects_unknown_path():
    with pytest.raises(ValueError, match="to_bf16: path must be one of"):
        bf16.to_bf16(np.zeros(3, dtype=np.float32), path="sse")


def test_binding_rejects_size_mismatch():
    from pyneural import _C
    with pytest.raises(ValueError, match="to_bf16: src has 3 elements but dst has 2"):
        _C.to_bf16(np.zeros(3, dtype=np.float32), np.zeros(2, dtype=np.uint16))


def test_binding_rejects_missing_path():
    from pyneural import _C
    missing = [p for p in bf16.CONVERT_PATHS if p not in PATHS]
    if not missing:
        pytest.skip("this CPU has every conversion path")
    with pytest.raises(ValueError, match=f"this CPU has no '{missing[0]}' path"):
        _C.to_bf16(np.zeros(3, dtype=np.float32), np.zeros(3, dtype=np.uint16), missing[0])
