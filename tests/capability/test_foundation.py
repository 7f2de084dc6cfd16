"""Foundation capability: "Can build mathematical operations and ML primitives".

Checks the whole public surface of `tinytorch.tensor` and `tinytorch.activations` against NumPy on
shapes and broadcasts drawn at random by hypothesis, and checks that bad input gets a clear error.
`tito milestone test foundation` runs this file.
"""
import math
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import tinytorch.tensor as tt
from tinytorch.tensor import Tensor
import tinytorch.activations as act

SETTINGS = settings(max_examples=40, deadline=None)
floats = st.floats(-10, 10, allow_nan=False, width=32)
shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=5)

def arrays(shape): return hnp.arrays(np.float32, shape, elements=floats)

@st.composite
def broadcast_pair(draw):
    "Two arrays whose shapes broadcast together (hypothesis draws the pair of shapes)."
    shape_a, shape_b = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4)).input_shapes
    return draw(arrays(shape_a)), draw(arrays(shape_b))

def close(t, ref, tol=1e-5):
    assert isinstance(t, Tensor)
    assert t.shape == np.shape(ref), f"shape {t.shape} != {np.shape(ref)}"
    np.testing.assert_allclose(t.numpy(), ref, rtol=tol, atol=tol)

@SETTINGS
@given(broadcast_pair())
def test_binary_ops_broadcast_like_numpy(pair):
    a, b = pair
    ta, tb = Tensor(a), Tensor(b)
    close(ta + tb, a + b); close(ta - tb, a - b); close(ta * tb, a * b)
    safe_b = np.where(np.abs(b) < 0.5, 0.5, b).astype(np.float32)
    close(ta / Tensor(safe_b), a / safe_b, 1e-4)
    close(tt.maximum(ta, tb), np.maximum(a, b))
    close(tt.where(ta > tb, ta, tb), np.where(a > b, a, b))
    np.testing.assert_array_equal((ta < tb).numpy(), a < b)
    np.testing.assert_array_equal((ta == tb).numpy(), a == b)

@SETTINGS
@given(arrays(shapes), st.floats(-3, 3, allow_nan=False))
def test_scalars_on_either_side(a, s):
    t = Tensor(a)
    s32 = np.float32(s)
    close(t + s, a + s32); close(s + t, s32 + a); close(t * s, a * s32); close(s - t, s32 - a)
    close(-t, -a); close(t ** 2, a ** 2, 1e-4)
    assert (t * s).dtype == np.float32

@SETTINGS
@given(st.data())
def test_reductions_on_random_axes(data):
    a = data.draw(arrays(hnp.array_shapes(min_dims=1, max_dims=4, max_side=5)))
    axis = data.draw(st.one_of(st.none(), st.integers(-a.ndim, a.ndim - 1),
                               st.lists(st.integers(0, a.ndim - 1), min_size=1, max_size=a.ndim, unique=True).map(tuple)))
    keepdims = data.draw(st.booleans())
    t = Tensor(a)
    kw = dict(axis=axis, keepdims=keepdims)
    close(t.sum(**kw), a.sum(**kw), 1e-4); close(t.mean(**kw), a.mean(**kw), 1e-4)
    close(t.max(**kw), a.max(**kw)); close(t.min(**kw), a.min(**kw))
    close(t.var(**kw), a.var(**kw), 1e-3)
    if axis is None or isinstance(axis, int):
        np.testing.assert_array_equal(t.argmax(axis=axis).numpy(), a.argmax(axis=axis))

@SETTINGS
@given(st.integers(1, 4), st.integers(1, 5), st.integers(1, 5), st.integers(1, 5))
def test_batched_matmul(batch, n, k, m):
    rng = np.random.default_rng(batch * 100 + n * 10 + k)
    a, b = rng.standard_normal((batch, n, k)).astype(np.float32), rng.standard_normal((k, m)).astype(np.float32)
    close(Tensor(a) @ Tensor(b), a @ b, 1e-4)
    c = rng.standard_normal((batch, k, m)).astype(np.float32)
    close(Tensor(a) @ Tensor(c), a @ c, 1e-4)

@SETTINGS
@given(arrays(hnp.array_shapes(min_dims=2, max_dims=4, max_side=4)), st.randoms(use_true_random=False))
def test_shape_ops(a, rnd):
    t = Tensor(a)
    close(t.reshape(-1), a.reshape(-1)); close(t.flatten(), a.ravel())
    axes = list(range(a.ndim)); rnd.shuffle(axes)
    close(t.permute(*axes), a.transpose(axes)); close(t.transpose(), a.swapaxes(-1, -2))
    close(t.unsqueeze(1), np.expand_dims(a, 1)); close(t.unsqueeze(1).squeeze(1), a)
    close(t[0], a[0]); close(t[..., :1], a[..., :1]); close(t[a > 0], a[a > 0])
    close(tt.concat([t, t], axis=-1), np.concatenate([a, a], -1)); close(tt.stack([t, t], 1), np.stack([a, a], 1))

@SETTINGS
@given(arrays(shapes))
def test_elementwise_math(a):
    t = Tensor(a)
    pos = np.abs(a) + 0.1
    close(t.exp(), np.exp(a), 1e-4); close(Tensor(pos).log(), np.log(pos), 1e-5)
    close(Tensor(pos).sqrt(), np.sqrt(pos)); close(t.abs(), np.abs(a)); close(t.clip(-1, 2), np.clip(a, -1, 2))

@SETTINGS
@given(arrays(hnp.array_shapes(min_dims=1, max_dims=3, max_side=6)))
def test_activations_match_numpy(a):
    t = Tensor(a)
    close(act.relu(t), np.maximum(a, 0)); close(act.ReLU()(t), np.maximum(a, 0))
    close(act.leaky_relu(t, 0.1), np.where(a > 0, a, 0.1 * a), 1e-6)
    close(act.sigmoid(t), 1 / (1 + np.exp(-a.astype(np.float64))), 1e-5)
    close(act.tanh(t), np.tanh(a), 1e-5)
    gelu_ref = 0.5 * a * (1 + np.tanh(math.sqrt(2 / math.pi) * (a + 0.044715 * a ** 3)))
    close(act.gelu(t), gelu_ref, 1e-4)
    e = np.exp(a - a.max(-1, keepdims=True)); sm = e / e.sum(-1, keepdims=True)
    close(act.softmax(t, axis=-1), sm, 1e-5); close(act.Softmax(axis=-1)(t), sm, 1e-5)
    close(act.log_softmax(t, axis=-1), np.log(sm), 1e-4)

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activations_stable_at_extremes(dtype):
    x = Tensor(np.array([[-1000.0, 0.0, 1000.0]], dtype=dtype))
    for out in [act.sigmoid(x), act.softmax(x), act.log_softmax(x), act.tanh(x), act.gelu(x)]:
        assert np.all(np.isfinite(out.numpy())), out
    np.testing.assert_allclose(act.sigmoid(x).numpy(), [[0.0, 0.5, 1.0]], atol=1e-7)
    np.testing.assert_allclose(act.softmax(x).numpy(), [[0.0, 0.0, 1.0]], atol=1e-7)
    np.testing.assert_allclose(act.log_softmax(x).numpy(), [[-2000.0, -1000.0, 0.0]], rtol=1e-6)

def test_bad_input_gets_clear_errors():
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((4,)))
    for bad, words in [(lambda: a + b, ["(2, 3)", "(4,)"]),
                       (lambda: a @ Tensor(np.ones((2, 3))), ["(2, 3)", "not aligned"]),
                       (lambda: a.reshape(5), ["(2, 3)", "(5,)"]),
                       (lambda: a.sum(axis=2), ["axis 2"]),
                       (lambda: Tensor([[1, 2], [3]]), ["rectangular"]),
                       (lambda: Tensor(np.arange(3), requires_grad=True), ["floating dtype"]),
                       (lambda: tt.concat([a, b]), ["(2, 3)", "(4,)"])]:
        with pytest.raises((ValueError, TypeError)) as info:
            bad()
        for w in words: assert w in str(info.value), (w, str(info.value))

def test_creation_helpers_and_repr():
    tt.manual_seed(3); x = tt.randn(2, 3)
    tt.manual_seed(3); np.testing.assert_array_equal(x.numpy(), tt.randn(2, 3).numpy())
    assert x.dtype == np.float32 and tt.rand(4).dtype == np.float32
    np.testing.assert_array_equal(tt.eye(3).numpy(), np.eye(3))
    np.testing.assert_array_equal(tt.full((2, 2), 3.0).numpy(), np.full((2, 2), 3.0))
    np.testing.assert_array_equal(tt.arange(2, 8, 2).numpy(), [2, 4, 6])
    r = repr(Tensor([[1.0, 2.0]], requires_grad=True))
    assert r.startswith("Tensor([[1., 2.]]") and "float32" in r and "requires_grad=True" in r
