"""The direct depthwise convolution (csrc/cpu/conv_depthwise*.cpp: groups == C, any depth multiplier),
which conv2d takes automatically for those shapes: forward (bias, ReLU), backward-data and
backward-weight against float64 numpy within the summation's rounding bound, on every SIMD path,
outputs poisoned with NaN; the same bits at 1 and 2 threads; and the same answers as the GEMM path
it replaced (parallel="gemm" still forces that one)."""
import pytest
from conv_cases import (PASSES, assert_agrees_with_the_gemm_path, assert_same_bits_at_one_and_two_threads, case,
                        check_float64, operands, run_passes)


def _case(N, C, H, W, m, kh, kw, stride=1, padding=0, dilation=1):
    return case(N, C, H, W, C * m, kh, kw, stride, padding, dilation, groups=C)


# Odd widths (vector tails of 8 and 16 lanes), taps that hang over every edge, strides that skip.
CASES = {
    "3x3-s1-p1": _case(3, 7, 13, 19, 1, 3, 3, 1, 1),
    "3x3-s2-p1": _case(2, 6, 15, 14, 1, 3, 3, 2, 1),
    "3x3-s2-p1-x3": _case(2, 4, 9, 11, 3, 3, 3, 2, 1),
    "5x5-s1-p2": _case(2, 5, 12, 37, 1, 5, 5, 1, 2),
    "5x3-s2x1-p0x2-d1x2": _case(2, 3, 13, 8, 2, 5, 3, (2, 1), (0, 2), (1, 2)),
    "3x3-d2-p2": _case(2, 4, 11, 10, 1, 3, 3, 1, 2, 2),
    "7x7-s3-p3": _case(2, 3, 17, 23, 1, 7, 7, 3, 3),
    "1x1": _case(3, 5, 6, 7, 2, 1, 1),
    "kernel-wider-than-padding": _case(2, 2, 4, 3, 1, 3, 3, 1, 2),
    "many-small-planes": _case(33, 9, 3, 4, 1, 3, 3, 1, 1),
    "mobilenet-14x14-s2": _case(2, 24, 14, 14, 1, 3, 3, 2, 1),
}


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_float64(isa, rng, name, relu):
    c = CASES[name]
    x, w, dy, bias = operands(rng, c)
    check_float64(run_passes(x, w, dy, bias, c, relu), x, w, dy, bias, c, relu, f"{name}, {isa}")


@pytest.mark.parametrize("name", ["3x3-s2-p1-x3", "5x5-s1-p2", "many-small-planes"])
def test_agrees_with_the_gemm_path(rng, name):
    assert_agrees_with_the_gemm_path(rng, CASES[name])


def test_same_bits_at_one_and_two_threads(rng, tmp_path):
    """Each output element is summed by one thread in one order, whatever the thread count."""
    assert_same_bits_at_one_and_two_threads(_case(5, 16, 21, 19, 2, 3, 3, 2, 1), PASSES, rng, tmp_path)
