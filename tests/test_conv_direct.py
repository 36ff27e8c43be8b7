"""The direct stride-1 convolution (csrc/cpu/conv_direct*.cpp), which conv2d takes on the AVX2 and
AVX-512 paths for the forward and backward-data of layers with few channels, and their
backward-weight with fewer still: against float64 numpy within the summation's rounding bound,
outputs poisoned with NaN, on widths that do not divide its 16- and 32-pixel tiles (planes of at
most 8 columns, which AVX2 takes two rows at a time and AVX-512 four, two per vector; of 9 to 16, a
row per AVX-512 vector), channel counts that do not divide its 6-channel blocks, padding below the
kernel's reach, dilation, bias and ReLU; the same bits at 1 and 2 threads; and the same answers as
the GEMM path (parallel="gemm" forces that one). On other SIMD paths the same calls run the GEMM
path, so the float64 check holds there too."""
import pytest
from conv_cases import (PASSES, assert_agrees_with_the_gemm_path, assert_same_bits_at_one_and_two_threads, case,
                        check_float64, operands, run_passes)


def _case(N, C, H, W, Co, k, padding, dilation=1):
    kh, kw = (k, k) if isinstance(k, int) else k
    return case(N, C, H, W, Co, kh, kw, 1, padding, dilation)


CASES = {
    "resnet-16ch-32x32": _case(2, 16, 32, 32, 16, 3, 1),
    "stem-3ch": _case(2, 3, 17, 19, 16, 3, 1),            # 19 columns: a 16-pixel tile and a 3-lane tail
    "digits-1ch-8x8": _case(3, 1, 8, 8, 32, 3, 1),        # 8 columns: two rows per tile
    "digits-32ch-8x8": _case(2, 32, 8, 8, 64, 3, 1),
    "odd-rows-7x7": _case(2, 13, 7, 7, 11, 3, 1),          # 7 rows: the last pair is one row
    "narrow-5-cols": _case(2, 5, 9, 5, 7, 3, 1),
    "co-not-multiple-of-6": _case(2, 8, 12, 10, 13, 3, 1),
    "5x5-pad2": _case(2, 4, 11, 23, 5, 5, 2),
    "valid-no-padding": _case(2, 6, 10, 12, 9, 3, 0),
    "pad-below-reach": _case(2, 4, 9, 14, 6, (3, 5), (0, 1)),
    "dilated": _case(2, 5, 13, 18, 8, 3, 2, dilation=2),
    "1x1": _case(2, 20, 6, 9, 17, 1, 0),
    "one-output-channel": _case(2, 7, 10, 33, 1, 3, 1),
    "wide-row-17": _case(1, 2, 3, 17, 6, 3, 1),            # a 16-pixel tile, then a 1-lane one
    "image-groups": _case(7, 16, 34, 34, 5, 3, 1),          # backward-weight: 3 padded images per group
    "rows-of-12-odd-count": _case(2, 6, 13, 12, 7, 3, 1),   # AVX-512: a row per vector, the last pair one row
    "six-rows-of-6": _case(2, 3, 6, 6, 8, 3, 1),            # AVX-512: 4-row tiles, the second one half live
    "wide-row-47": _case(1, 3, 5, 47, 6, 3, 1),             # AVX-512: a 32-pixel tile, then 15 lanes
}


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_float64(isa, rng, name, relu):
    c = CASES[name]
    x, w, dy, bias = operands(rng, c)
    check_float64(run_passes(x, w, dy, bias, c, relu), x, w, dy, bias, c, relu, f"{name}, {isa}")


@pytest.mark.parametrize("name", ["resnet-16ch-32x32", "odd-rows-7x7", "co-not-multiple-of-6", "dilated"])
def test_agrees_with_the_gemm_path(rng, name):
    assert_agrees_with_the_gemm_path(rng, CASES[name])


def test_same_bits_at_one_and_two_threads(rng, tmp_path):
    """Forward and backward-data sum each output element in one task in one order, whatever the thread
    count (backward-weight sums one slice of the batch per thread, in a fixed order for a given count)."""
    assert_same_bits_at_one_and_two_threads(_case(5, 16, 21, 19, 20, 3, 1), PASSES[:2], rng, tmp_path)
