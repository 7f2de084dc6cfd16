"""Protected tests for module 03 (Activations): ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Softmax and LogSoftmax.

Run against the exported package; imports modules 02-03 only. References are written here in NumPy
(float64, with math.erf for the exact GELU), and each function is checked at extreme inputs where a
naive formula overflows.
"""
import math

import numpy as np
import pytest
import hypothesis.extra.numpy as hnp
from hypothesis import given, settings, strategies as st

from tinytorch.tensor import Tensor
from tinytorch.activations import (
    GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh, gelu, leaky_relu, log_softmax, relu, sigmoid,
    softmax, tanh)

checks = settings(max_examples=30, deadline=None, derandomize=True, database=None)
seeds = st.integers(0, 2**32 - 1)
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=5)


def data(shape, seed, scale=3.0, dtype=np.float64):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def close(got, want, tol):
    assert isinstance(got, Tensor), type(got)
    assert got.shape == np.shape(want), f"shape {got.shape} != {np.shape(want)}"
    np.testing.assert_allclose(got.data, want, rtol=tol, atol=tol)


# NumPy references (float64)
def ref_sigmoid(x):
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1 / (1 + np.exp(-x[pos]))
    out[~pos] = np.exp(x[~pos]) / (1 + np.exp(x[~pos]))
    return out


def ref_gelu_tanh(x):
    x = np.asarray(x, np.float64)
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def ref_gelu_exact(x):
    return np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in np.ravel(x)]).reshape(np.shape(x))


def ref_log_softmax(x, axis):
    x = np.asarray(x, np.float64)
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


# --- elementwise ------------------------------------------------------------------------------------

@checks
@given(shape=shapes, seed=seeds)
def test_relu_matches_numpy(shape, seed):
    x = data(shape, seed)
    close(relu(x_t := Tensor(x)), np.maximum(x, 0), 0)
    close(ReLU()(x_t), np.maximum(x, 0), 0)


@checks
@given(shape=shapes, seed=seeds, slope=st.sampled_from([0.0, 0.01, 0.2, 1.0, 3.0]))
def test_leaky_relu_matches_numpy(shape, seed, slope):
    x = data(shape, seed)
    want = np.where(x > 0, x, slope * x)
    close(leaky_relu(Tensor(x), slope), want, 1e-12)
    close(LeakyReLU(slope)(Tensor(x)), want, 1e-12)


def test_leaky_relu_default_slope_is_one_hundredth():
    x = np.array([-2.0, -0.5, 0.0, 1.5])
    close(leaky_relu(Tensor(x)), np.array([-0.02, -0.005, 0.0, 1.5]), 1e-12)


@checks
@given(shape=shapes, seed=seeds)
def test_sigmoid_matches_numpy(shape, seed):
    x = data(shape, seed)
    close(sigmoid(Tensor(x)), ref_sigmoid(x), 1e-12)
    close(Sigmoid()(Tensor(x)), ref_sigmoid(x), 1e-12)


def test_sigmoid_is_stable_at_extremes():
    x = np.array([-1000.0, -100.0, -30.0, 0.0, 30.0, 100.0, 1000.0], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):   # no overflow on the way
        out = sigmoid(Tensor(x))
    assert out.dtype == np.float32
    assert np.all(np.isfinite(out.data))
    np.testing.assert_allclose(out.data, ref_sigmoid(x), atol=1e-7)
    assert out.data[0] == 0.0 or out.data[0] < 1e-30
    assert out.data[-1] == 1.0
    assert out.data[3] == 0.5


@checks
@given(shape=shapes, seed=seeds)
def test_tanh_matches_numpy(shape, seed):
    x = data(shape, seed)
    close(tanh(Tensor(x)), np.tanh(x), 1e-12)
    close(Tanh()(Tensor(x)), np.tanh(x), 1e-12)


@checks
@given(shape=shapes, seed=seeds)
def test_gelu_matches_the_tanh_formula(shape, seed):
    x = data(shape, seed)
    close(gelu(Tensor(x)), ref_gelu_tanh(x), 1e-12)
    close(GELU()(Tensor(x)), ref_gelu_tanh(x), 1e-12)


def test_gelu_is_close_to_the_exact_erf_gelu():
    x = np.linspace(-6, 6, 241)
    close(gelu(Tensor(x)), ref_gelu_exact(x), 1e-3)
    close(gelu(Tensor(np.array([-30.0, 0.0, 30.0]))), np.array([0.0, 0.0, 30.0]), 1e-9)


def test_activations_keep_float32():
    x = Tensor(data((4, 5), 0, dtype=np.float32))
    for fn in (relu, leaky_relu, sigmoid, tanh, gelu, softmax, log_softmax):
        assert fn(x).dtype == np.float32, fn.__name__


# --- softmax and log-softmax ------------------------------------------------------------------------

@st.composite
def shape_and_axis(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5))
    return shape, draw(st.integers(-len(shape), len(shape) - 1))


@checks
@given(sa=shape_and_axis(), seed=seeds)
def test_softmax_matches_numpy(sa, seed):
    shape, axis = sa
    x = data(shape, seed)
    want = np.exp(ref_log_softmax(x, axis))
    out = softmax(Tensor(x), axis=axis)
    close(out, want, 1e-12)
    np.testing.assert_allclose(out.data.sum(axis=axis), 1.0, rtol=1e-12)
    close(Softmax(axis)(Tensor(x)), want, 1e-12)


@checks
@given(sa=shape_and_axis(), seed=seeds)
def test_log_softmax_matches_numpy(sa, seed):
    shape, axis = sa
    x = data(shape, seed)
    close(log_softmax(Tensor(x), axis=axis), ref_log_softmax(x, axis), 1e-12)
    close(LogSoftmax(axis)(Tensor(x)), ref_log_softmax(x, axis), 1e-12)


def test_softmax_default_axis_is_last():
    x = data((3, 4), 1)
    close(softmax(Tensor(x)), np.exp(ref_log_softmax(x, -1)), 1e-12)
    close(log_softmax(Tensor(x)), ref_log_softmax(x, -1), 1e-12)


def test_softmax_and_log_softmax_are_stable_for_huge_logits():
    x = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, 0.0, 1000.0], [88.0, 89.0, -5.0]], np.float32)
    with np.errstate(over="raise", invalid="raise"):
        p, lp = softmax(Tensor(x)), log_softmax(Tensor(x))
    assert np.all(np.isfinite(p.data)) and np.all(np.isfinite(lp.data))
    np.testing.assert_allclose(p.data, np.exp(ref_log_softmax(x, -1)), atol=1e-6)
    np.testing.assert_allclose(lp.data, ref_log_softmax(x, -1), atol=1e-4)
    assert lp.data[1, 0] == pytest.approx(-2000.0, rel=1e-6)   # log-softmax keeps what softmax rounds to 0


def test_softmax_is_shift_invariant():
    x = data((2, 6), 3)
    close(softmax(Tensor(x + 50.0)), softmax(Tensor(x)).data, 1e-10)


def test_softmax_of_a_0d_tensor_is_one():
    assert softmax(Tensor(np.float64(3.0))).item() == pytest.approx(1.0)
    assert log_softmax(Tensor(np.float64(3.0))).item() == pytest.approx(0.0)


def test_softmax_of_one_hot_limit():
    x = np.array([[0.0, 0.0, 50.0]])
    np.testing.assert_allclose(softmax(Tensor(x)).data, [[0.0, 0.0, 1.0]], atol=1e-20)


# --- a graph is recorded when the input wants a gradient --------------------------------------------

def test_activations_record_the_graph():
    x = Tensor(data((2, 3), 4), requires_grad=True)
    for fn in (relu, leaky_relu, sigmoid, tanh, gelu, softmax, log_softmax):
        assert fn(x).requires_grad, fn.__name__
    y = Tensor(data((2, 3), 4))
    assert not any(fn(y).requires_grad for fn in (relu, sigmoid, softmax))


# --- bad input --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [relu, leaky_relu, sigmoid, tanh, gelu, softmax, log_softmax])
def test_non_tensors_and_integer_tensors_are_rejected(fn):
    with pytest.raises(TypeError):
        fn(np.ones(3))
    with pytest.raises(TypeError):
        fn(Tensor(np.arange(3)))


@pytest.mark.parametrize("fn", [softmax, log_softmax])
def test_softmax_axis_out_of_range_names_the_shape(fn):
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        fn(Tensor(np.ones((2, 3))), axis=2)
    with pytest.raises((TypeError, ValueError)):
        fn(Tensor(np.ones((2, 3))), axis=1.5)


@pytest.mark.parametrize("slope", [-0.1, float("nan"), float("inf")])
def test_leaky_relu_rejects_bad_slopes(slope):
    with pytest.raises(ValueError):
        leaky_relu(Tensor(np.ones(2)), slope)
    with pytest.raises(ValueError):
        LeakyReLU(slope)
