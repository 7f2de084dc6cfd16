"""Protected tests for module 06 (Spatial): convolution (the naive loops and the fast im2col version),
max and average pooling, Flatten and BatchNorm2d.

Run against the exported package; imports modules 02-06 only (forward passes, no backward).
The reference convolution and pooling are written here as plain loops over output positions
in float64; BatchNorm is checked against NumPy's mean and variance.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinytorch.tensor import Tensor, manual_seed
from tinytorch.layers import Module
from tinytorch.spatial import (
    AvgPool2d, BatchNorm2d, Conv2d, Flatten, MaxPool2d, avg_pool2d, batch_last_copy, conv2d, conv2d_naive,
    conv_output_size, max_pool2d)

checks = settings(max_examples=30, deadline=None, derandomize=True, database=None)


def rand(shape, seed, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def pair(v): return (v, v) if isinstance(v, int) else tuple(v)


def ref_conv(x, w, b=None, stride=1, padding=0):
    "Cross-correlation by loops over every output position (float64)."
    (sh, sw), (ph, pw) = pair(stride), pair(padding)
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    out = np.zeros((n, f, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]        # (n, c, kh, kw)
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3]))
    return out if b is None else out + np.asarray(b).reshape(1, f, 1, 1)


def ref_pool(x, k, stride=None, padding=0, mode="max"):
    (kh, kw) = pair(k)
    (sh, sw) = pair(stride) if stride is not None else (kh, kw)
    (ph, pw) = pair(padding)
    n, c, h, w = x.shape
    fill = -np.inf if mode == "max" else 0.0
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), fill)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            out[:, :, i, j] = win.max(axis=(2, 3)) if mode == "max" else win.mean(axis=(2, 3))
    return out


@st.composite
def conv_case(draw):
    n, c, f = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 7))
    w = draw(st.integers(max(1, kw - 2 * pw), 7))
    return (n, c, h, w), (f, c, kh, kw), (sh, sw), (ph, pw), draw(st.booleans()), draw(st.integers(0, 2**31))


# --- convolution ------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, k, s, p", [(5, 3, 1, 0), (5, 3, 1, 1), (28, 3, 1, 1), (7, 3, 2, 1), (6, 2, 2, 0),
                                           (4, 4, 1, 0), (1, 3, 1, 1), (10, 5, 3, 2)])
def test_conv_output_size(size, k, s, p):
    assert conv_output_size(size, k, s, p) == len(range(0, size + 2 * p - k + 1, s))


@checks
@given(case=conv_case())
def test_conv2d_matches_the_loop_reference(case):
    xs, ws, stride, padding, use_bias, seed = case
    x, w, b = rand(xs, seed), rand(ws, seed + 1), rand(ws[0], seed + 2)
    out = conv2d(Tensor(x), Tensor(w), Tensor(b) if use_bias else None, stride=stride, padding=padding)
    want = ref_conv(x, w, b if use_bias else None, stride, padding)
    assert out.shape == want.shape
    np.testing.assert_allclose(out.data, want, rtol=1e-10, atol=1e-10)


@checks
@given(case=conv_case())
def test_conv2d_naive_matches_the_loop_reference(case):
    xs, ws, stride, padding, use_bias, seed = case
    x, w, b = rand(xs, seed), rand(ws, seed + 1), rand(ws[0], seed + 2)
    out = conv2d_naive(x, w, b if use_bias else None, stride=stride, padding=padding)
    np.testing.assert_allclose(out, ref_conv(x, w, b if use_bias else None, stride, padding), rtol=1e-10, atol=1e-10)


def test_conv2d_by_hand():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    w = np.array([[[[1, 0], [0, -1]]]], np.float32)      # top-left minus bottom-right
    out = conv2d(Tensor(x), Tensor(w))
    np.testing.assert_array_equal(out.data, np.full((1, 1, 3, 3), -5.0))
    box = np.ones((1, 1, 3, 3), np.float32)
    out = conv2d(Tensor(np.ones((1, 1, 3, 3), np.float32)), Tensor(box), padding=1)
    np.testing.assert_array_equal(out.data[0, 0], [[4, 6, 4], [6, 9, 6], [4, 6, 4]])


def test_conv2d_float32_in_float32_out():
    x, w = rand((2, 3, 8, 8), 0, np.float32), rand((4, 3, 3, 3), 1, np.float32)
    out = conv2d(Tensor(x), Tensor(w), padding=1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, ref_conv(x, w, padding=1), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (8, 1, 27, 19), (9, 1, 27, 19), (17, 2, 16, 32), (3, 5, 1, 103)])
def test_batch_last_copy_is_the_transpose_across_tile_edges(shape):
    "Tiles are 8 images × 512 values: N of 8, 9 and 17, and C·H·W = 27·19 = 513 = 512 + 1, hit their edges."
    x = rand(shape, 0, np.float32)
    out = batch_last_copy(x)
    assert out.shape == shape[1:] + shape[:1] and out.flags.c_contiguous
    np.testing.assert_array_equal(out, x.transpose(1, 2, 3, 0))


def test_batch_last_copy_in_threads(monkeypatch):
    "Over 2^20 values the channels are split over threads; each block of H·W = 119·327 = 76·512 + 1 values ends in a 1-value tile."
    monkeypatch.setenv("TINYTORCH_NUM_THREADS", "3")
    x = rand((9, 3, 119, 327), 1, np.float32)
    assert x.size >= 1 << 20
    np.testing.assert_array_equal(batch_last_copy(x), x.transpose(1, 2, 3, 0))


def test_conv2d_on_a_batch_wider_than_one_copy_tile():
    x, w, b = rand((9, 1, 27, 19), 2), rand((2, 1, 3, 3), 3), rand(2, 4)
    np.testing.assert_allclose(conv2d(Tensor(x), Tensor(w), Tensor(b), padding=1).data, ref_conv(x, w, b, 1, 1),
                               rtol=1e-10, atol=1e-10)


def test_batch_last_layout_is_kept_and_copied_once(monkeypatch):
    "A conv output lives as (C, H, W, N) in memory; max pooling keeps that order, and only a plain NCHW batch is transposed."
    import tinytorch.spatial as spatial
    calls = []
    def counting_copy(x):
        calls.append(x.shape)
        return batch_last_copy(x)
    monkeypatch.setattr(spatial, "batch_last_copy", counting_copy)
    x, w = rand((3, 2, 6, 5), 0), rand((4, 2, 3, 3), 1)
    h = conv2d(Tensor(x), Tensor(w), padding=1)
    assert calls == [(3, 2, 6, 5)] and h.data.transpose(1, 2, 3, 0).flags.c_contiguous
    p = max_pool2d(h, 2)
    assert p.data.transpose(1, 2, 3, 0).flags.c_contiguous                # still batch-last
    assert max_pool2d(Tensor(x), 2).data.flags.c_contiguous                # NCHW in, NCHW out
    out = conv2d(p, Tensor(rand((2, 4, 2, 2), 2)))
    assert calls == [(3, 2, 6, 5)]                                         # the conv output needed no copy
    np.testing.assert_allclose(out.data, ref_conv(ref_pool(ref_conv(x, w, padding=1), 2), rand((2, 4, 2, 2), 2)),
                               rtol=1e-10, atol=1e-10)


def test_conv2d_records_the_graph():
    x, w = Tensor(rand((1, 1, 4, 4), 0)), Tensor(rand((1, 1, 2, 2), 1), requires_grad=True)
    assert conv2d(x, w).requires_grad


def test_conv2d_module_uses_its_weight_and_bias():
    manual_seed(0)
    conv = Conv2d(3, 5, 3, stride=2, padding=1)
    conv.bias.data = rand(5, 3, np.float32)
    assert conv.weight.shape == (5, 3, 3, 3) and conv.bias.shape == (5,)
    assert [n for n, _ in conv.named_parameters()] == ["weight", "bias"]
    x = rand((2, 3, 9, 7), 4, np.float32)
    out = conv(Tensor(x))
    assert out.shape == (2, 5, conv_output_size(9, 3, 2, 1), conv_output_size(7, 3, 2, 1))
    np.testing.assert_allclose(out.data, ref_conv(x, conv.weight.data, conv.bias.data, 2, 1), rtol=1e-4, atol=1e-4)
    assert Conv2d(3, 5, (1, 3), bias=False).bias is None


def test_conv2d_module_kaiming_init():
    manual_seed(0)
    w = Conv2d(16, 64, 3).weight.data
    assert w.var() == pytest.approx(2.0 / (16 * 9), rel=0.1)
    assert np.abs(w).max() <= np.sqrt(6.0 / (16 * 9)) * (1 + 1e-6)


def test_conv2d_errors_name_the_shapes():
    conv = Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"\(2, 1, 8, 8\)"):
        conv(Tensor(np.zeros((2, 1, 8, 8), np.float32)))             # wrong channel count
    with pytest.raises(ValueError, match=r"\(3, 8, 8\)"):
        conv(Tensor(np.zeros((3, 8, 8), np.float32)))                # missing batch axis
    with pytest.raises(ValueError, match=r"\(1, 3, 2, 2\)"):
        conv(Tensor(np.zeros((1, 3, 2, 2), np.float32)))             # smaller than the kernel
    with pytest.raises(TypeError):
        conv(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError):
        conv2d(Tensor(np.zeros((1, 3, 5, 5))), Tensor(np.zeros((2, 3, 3, 3))), Tensor(np.zeros(3)))   # bias size
    with pytest.raises(ValueError):
        Conv2d(3, 4, 0)
    with pytest.raises(ValueError):
        Conv2d(3, 4, 3, stride=0)


# --- pooling ----------------------------------------------------------------------------------------

@st.composite
def pool_case(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.none() | st.tuples(st.integers(1, 3), st.integers(1, 3)))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h, w = draw(st.integers(max(1, kh - 2 * ph), 7)), draw(st.integers(max(1, kw - 2 * pw), 7))
    return (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w), (kh, kw), stride, (ph, pw), draw(st.integers(0, 2**31))


@checks
@given(case=pool_case())
def test_max_pool2d_matches_the_loop_reference(case):
    shape, k, stride, padding, seed = case
    x = rand(shape, seed)
    out = max_pool2d(Tensor(x), k, stride, padding)
    want = ref_pool(x, k, stride, padding, "max")
    assert out.shape == want.shape
    np.testing.assert_array_equal(out.data, want)


@checks
@given(case=pool_case())
def test_avg_pool2d_matches_the_loop_reference(case):
    shape, k, stride, padding, seed = case
    x = rand(shape, seed)
    out = avg_pool2d(Tensor(x), k, stride, padding)
    want = ref_pool(x, k, stride, padding, "avg")
    assert out.shape == want.shape
    np.testing.assert_allclose(out.data, want, rtol=1e-12, atol=1e-12)


def test_pooling_by_hand():
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(max_pool2d(Tensor(x), 2).data, [[[[5, 7], [13, 15]]]])
    np.testing.assert_array_equal(avg_pool2d(Tensor(x), 2).data, [[[[2.5, 4.5], [10.5, 12.5]]]])
    neg = -np.ones((1, 1, 2, 2), np.float32)                      # max padding must not win with a 0
    np.testing.assert_array_equal(max_pool2d(Tensor(neg), 3, stride=1, padding=1).data, -np.ones((1, 1, 2, 2)))


def test_pooling_modules():
    x = rand((2, 3, 6, 6), 0, np.float32)
    np.testing.assert_array_equal(MaxPool2d(2)(Tensor(x)).data, ref_pool(x, 2).astype(np.float32))
    np.testing.assert_allclose(AvgPool2d(3, stride=1, padding=1)(Tensor(x)).data, ref_pool(x, 3, 1, 1, "avg"),
                               rtol=1e-5, atol=1e-6)
    assert max_pool2d(Tensor(x), 2).dtype == np.float32


def test_pooling_errors():
    x = Tensor(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(ValueError):
        max_pool2d(x, 2, padding=2)                                # more than half the window
    with pytest.raises(ValueError, match=r"\(1, 1, 4, 4\)"):
        avg_pool2d(x, 5)
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        max_pool2d(Tensor(np.zeros((4, 4), np.float32)), 2)


# --- Flatten ----------------------------------------------------------------------------------------

def test_flatten():
    x = rand((2, 3, 4, 5), 0, np.float32)
    np.testing.assert_array_equal(Flatten()(Tensor(x)).data, x.reshape(2, -1))
    np.testing.assert_array_equal(Flatten(0)(Tensor(x)).data, x.reshape(-1))
    np.testing.assert_array_equal(Flatten(1, 2)(Tensor(x)).data, x.reshape(2, 12, 5))
    with pytest.raises(ValueError):
        Flatten(3)(Tensor(np.zeros((2, 3))))


# --- BatchNorm2d ------------------------------------------------------------------------------------

def bn_ref(x, mean, var, gamma, beta, eps=1e-5):
    shape = (1, -1, 1, 1)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * gamma.reshape(shape) + beta.reshape(shape)


def batch(seed, shape=(4, 3, 5, 6)):
    scale = np.array([2.0, 0.5, 3.0]).reshape(1, 3, 1, 1)
    return (rand(shape, seed) * scale + 1.5).astype(np.float32)


def test_batchnorm_training_normalises_each_channel_with_batch_statistics():
    bn = BatchNorm2d(3)
    x = batch(0)
    out = bn(Tensor(x)).data
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(out, bn_ref(x, mean, var, np.ones(3), np.zeros(3)), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1, atol=1e-3)


def test_batchnorm_applies_gamma_and_beta():
    bn = BatchNorm2d(3)
    gamma, beta = np.array([1.0, 2.0, 0.5], np.float32), np.array([0.0, -1.0, 3.0], np.float32)
    bn.weight.data, bn.bias.data = gamma.copy(), beta.copy()
    x = batch(1)
    out = bn(Tensor(x)).data
    np.testing.assert_allclose(out, bn_ref(x, x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3)), gamma, beta),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), beta, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), gamma, atol=1e-3)


def test_batchnorm_running_statistics_follow_the_momentum_rule():
    bn = BatchNorm2d(3, momentum=0.1)
    rm, rv = np.zeros(3), np.ones(3)
    for seed in range(3):
        x = batch(seed)
        bn(Tensor(x))
        rm = 0.9 * rm + 0.1 * x.mean(axis=(0, 2, 3))
        rv = 0.9 * rv + 0.1 * x.var(axis=(0, 2, 3), ddof=1)         # the running variance is unbiased
        np.testing.assert_allclose(np.asarray(bn.running_mean), rm, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(bn.running_var), rv, rtol=1e-5, atol=1e-6)
    state = bn.state_dict()
    np.testing.assert_allclose(state["running_mean"], rm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["running_var"], rv, rtol=1e-5, atol=1e-6)


def test_batchnorm_eval_uses_the_running_statistics_and_freezes_them():
    bn = BatchNorm2d(3)
    for seed in range(2): bn(Tensor(batch(seed)))
    gamma, beta = np.array([1.5, 0.5, 2.0], np.float32), np.array([0.1, 0.2, -0.3], np.float32)
    bn.weight.data, bn.bias.data = gamma.copy(), beta.copy()
    bn.eval()
    rm, rv = np.array(bn.running_mean, copy=True), np.array(bn.running_var, copy=True)
    x = batch(5, (1, 3, 4, 4))                                       # a single image is fine in eval mode
    out = bn(Tensor(x)).data
    np.testing.assert_allclose(out, bn_ref(x, rm, rv, gamma, beta), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(bn.running_mean), rm)
    np.testing.assert_array_equal(np.asarray(bn.running_var), rv)


def test_batchnorm_eval_after_loading_statistics():
    bn = BatchNorm2d(2)
    rm, rv = np.array([1.0, -2.0], np.float32), np.array([4.0, 0.25], np.float32)
    bn.load_state_dict({**bn.state_dict(), "running_mean": rm, "running_var": rv})
    bn.eval()
    x = rand((2, 2, 3, 3), 3, np.float32)
    np.testing.assert_allclose(bn(Tensor(x)).data, bn_ref(x, rm, rv, np.ones(2), np.zeros(2)), rtol=1e-4, atol=1e-4)


def test_batchnorm_records_the_graph_and_registers_its_state():
    bn = BatchNorm2d(4)
    assert bn(Tensor(rand((2, 4, 3, 3), 0, np.float32))).requires_grad
    assert sorted(bn.state_dict()) == ["bias", "running_mean", "running_var", "weight"]
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]


def test_batchnorm_errors():
    bn = BatchNorm2d(3)
    with pytest.raises(ValueError, match=r"\(2, 4, 5, 5\)"):
        bn(Tensor(np.zeros((2, 4, 5, 5), np.float32)))
    with pytest.raises(ValueError, match=r"\(3, 5, 5\)"):
        bn(Tensor(np.zeros((3, 5, 5), np.float32)))
    with pytest.raises(ValueError):
        bn(Tensor(np.zeros((1, 3, 1, 1), np.float32)))              # one value per channel cannot be normalised
    with pytest.raises(ValueError):
        BatchNorm2d(3, momentum=1.5)


# --- a small CNN end to end -------------------------------------------------------------------------

def test_a_small_cnn_matches_the_reference_layer_by_layer():
    from tinytorch.dense import Sequential
    from tinytorch.activations import ReLU
    from tinytorch.layers import Linear
    manual_seed(0)
    conv, lin = Conv2d(1, 4, 3, padding=1), Linear(4 * 3 * 3, 5)
    conv.bias.data = rand(4, 1, np.float32)
    model = Sequential(conv, ReLU(), MaxPool2d(2), Flatten(), lin)
    x = rand((2, 1, 6, 6), 2, np.float32)
    h = ref_pool(np.maximum(ref_conv(x, conv.weight.data, conv.bias.data, 1, 1), 0), 2)
    want = h.reshape(2, -1) @ lin.weight.data.T.astype(np.float64) + lin.bias.data
    np.testing.assert_allclose(model(Tensor(x)).data, want, rtol=1e-4, atol=1e-4)
    assert isinstance(model, Module)
