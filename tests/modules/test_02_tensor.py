"""Protected tests for module 02 (Tensors): construction, broadcasting, every op's forward, and the graph
each op records, checked against NumPy.

Run against the exported package; imports module 02 only (no backward: that is module 09).
Hypothesis draws shapes and values; NumPy is the reference for every value and shape.
"""
import numpy as np
import pytest
import hypothesis.extra.numpy as hnp
from hypothesis import given, settings, strategies as st

from tinytorch.tensor import (
    Tensor, arange, broadcast_shape, concat, eye, full, manual_seed, maximum, ones, rand, randn, stack,
    tensor, where, zeros)

checks = settings(max_examples=30, deadline=None, derandomize=True, database=None)
seeds = st.integers(0, 2**32 - 1)


def arr(shape, seed, kind="normal", dtype=np.float64):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    if kind == "positive": x = np.abs(x) + 0.5
    return np.asarray(x, dtype=dtype)


def close(got, want, tol=1e-6):
    got = got.data if isinstance(got, Tensor) else np.asarray(got)
    assert got.shape == np.shape(want), f"shape {got.shape} != {np.shape(want)}"
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def names_both(err, a, b):
    msg = str(err.value)
    assert str(tuple(a)) in msg and str(tuple(b)) in msg, msg


# --- construction -----------------------------------------------------------------------------------

def test_constructor_dtype_rules():
    assert Tensor([1, 2, 3]).dtype == np.float32          # Python numbers default to float32
    assert Tensor([[1.5, 2.0], [3.0, 4.0]]).dtype == np.float32
    assert Tensor(2.5).shape == ()
    assert Tensor(np.zeros(2)).dtype == np.float64         # arrays keep their dtype
    assert Tensor(np.arange(3)).dtype == np.arange(3).dtype
    assert Tensor([True, False]).dtype == np.bool_
    assert Tensor([1, 2], dtype=np.int32).dtype == np.int32
    assert tensor([[1, 2], [3, 4]]).shape == (2, 2)
    np.testing.assert_array_equal(Tensor([[1, 2], [3, 4]]).numpy(), np.array([[1, 2], [3, 4]], np.float32))


def test_tensor_properties():
    t = Tensor(np.ones((2, 3, 4), np.float32))
    assert (t.shape, t.ndim, t.size, len(t)) == ((2, 3, 4), 3, 24, 2)
    assert Tensor([7.0]).item() == 7.0
    assert t.grad is None and t.requires_grad is False
    assert Tensor([1.0], requires_grad=True).requires_grad is True


def test_constructor_rejects_bad_data():
    with pytest.raises((TypeError, ValueError)):
        Tensor([[1, 2], [3]])                              # ragged
    with pytest.raises((TypeError, ValueError)):
        Tensor(np.arange(3), requires_grad=True)           # integers cannot have a gradient
    with pytest.raises(ValueError, match=r"\(2,\)"):
        Tensor([1.0, 2.0]).item()


def test_factories_match_numpy():
    np.testing.assert_array_equal(zeros(2, 3).data, np.zeros((2, 3)))
    assert zeros((2, 3)).shape == (2, 3) and zeros(2, 3).dtype == np.float32
    np.testing.assert_array_equal(ones(4).data, np.ones(4))
    np.testing.assert_array_equal(full((2, 2), 7.0).data, np.full((2, 2), 7.0))
    np.testing.assert_array_equal(arange(1, 2, 0.25).data, np.arange(1, 2, 0.25))
    np.testing.assert_array_equal(eye(3).data, np.eye(3))
    with pytest.raises(ValueError):
        zeros(2, -1)


def test_random_factories_are_seeded_and_distributed():
    manual_seed(123); a = randn(2000).data
    manual_seed(123); b = randn(2000).data
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32
    assert abs(a.mean()) < 0.1 and abs(a.std() - 1) < 0.1
    r = rand(2000).data
    assert r.min() >= 0 and r.max() < 1 and abs(r.mean() - 0.5) < 0.05


# --- broadcasting -----------------------------------------------------------------------------------

@checks
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=5, min_side=0, max_side=4))
def test_broadcast_shape_matches_numpy(shapes):
    a, b = shapes.input_shapes
    assert broadcast_shape(a, b) == np.broadcast_shapes(a, b)
    assert broadcast_shape(b, a) == np.broadcast_shapes(a, b)


@pytest.mark.parametrize("a, b", [((2, 3), (3,)), ((4, 1, 5), (3, 1)), ((), (2, 2)), ((0, 3), (1, 3)),
                                  ((5, 1, 4), (1, 7, 1)), ((1,), ()), ((), ())])
def test_broadcast_shape_examples(a, b):
    assert broadcast_shape(a, b) == np.broadcast_shapes(a, b)


@pytest.mark.parametrize("a, b", [((2, 3), (4,)), ((2, 1), (3, 4, 3)), ((5,), (0,)), ((2, 3, 4), (3, 3, 4))])
def test_broadcast_shape_rejects_incompatible_shapes(a, b):
    with pytest.raises(ValueError) as e:
        broadcast_shape(a, b)
    names_both(e, a, b)


def test_incompatible_operands_name_both_shapes():
    t, u = Tensor(np.ones((2, 3))), Tensor(np.ones(4))
    for op in (lambda: t + u, lambda: t - u, lambda: t * u, lambda: t / u, lambda: maximum(t, u)):
        with pytest.raises(ValueError) as e:
            op()
        names_both(e, (2, 3), (4,))


# --- elementwise arithmetic -------------------------------------------------------------------------

BINARY = {
    "add": (lambda a, b: a + b, "normal"),
    "sub": (lambda a, b: a - b, "normal"),
    "mul": (lambda a, b: a * b, "normal"),
    "div": (lambda a, b: a / b, "positive"),
    "maximum": (lambda a, b: maximum(a, b) if isinstance(a, Tensor) else np.maximum(a, b), "normal"),
}


@checks
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4),
       op=st.sampled_from(sorted(BINARY)), seed=seeds, dtype=st.sampled_from([np.float32, np.float64]),
       grads=st.tuples(st.booleans(), st.booleans()))
def test_binary_ops_broadcast_like_numpy(shapes, op, seed, dtype, grads):
    fn, kind_b = BINARY[op]
    sa, sb = shapes.input_shapes
    a, b = arr(sa, seed, dtype=dtype), arr(sb, seed + 1, kind_b, dtype=dtype)
    # an operand that wants a gradient is broadcast explicitly (recorded for backward): same values
    out = fn(Tensor(a, requires_grad=grads[0]), Tensor(b, requires_grad=grads[1]))
    assert out.dtype == dtype
    assert out.requires_grad == any(grads)
    close(out, fn(a, b), 1e-5 if dtype == np.float32 else 1e-12)


@checks
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4), seed=seeds,
       c=st.floats(0.5, 4.0) | st.integers(1, 5))
def test_scalar_operands_on_either_side(shape, seed, c):
    x = arr(shape, seed, "positive", np.float32)
    t = Tensor(x)
    for got, want in [(t + c, x + c), (c + t, c + x), (t - c, x - c), (c - t, c - x), (t * c, x * c),
                      (c * t, c * x), (t / c, x / c), (c / t, c / x), (-t, -x)]:
        assert got.dtype == np.float32, "a Python scalar must not upcast a float32 tensor"
        close(got, want.astype(np.float32), 1e-5)


@checks
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4), seed=seeds,
       p=st.sampled_from([2, 3, 0.5, -1, -0.5, 1.5, 0]))
def test_pow_with_constant_exponent(shape, seed, p):
    x = arr(shape, seed, "positive")
    close(Tensor(x) ** p, x ** p, 1e-10)


def test_pow_with_tensor_exponent_and_number_base():
    x = arr((3, 4), 0, "positive")
    close(2 ** Tensor(x), 2 ** x, 1e-10)
    close(Tensor(x) ** Tensor(np.float64(3.0)), x ** 3, 1e-10)
    with pytest.raises(ValueError):
        (-1) ** Tensor(x)


def test_numpy_array_on_the_left_gives_a_tensor():
    x = arr((2, 3), 1, dtype=np.float32)
    out = np.ones(3, np.float32) * Tensor(x)
    assert isinstance(out, Tensor)
    close(out, x, 1e-6)


def test_comparisons_are_boolean_tensors():
    x = np.array([1.0, 2.0, 3.0], np.float32)
    t = Tensor(x)
    for got, want in [(t > 1.5, x > 1.5), (t >= 2, x >= 2), (t < 2, x < 2), (t <= 2, x <= 2),
                      (t == Tensor([1.0, 0.0, 3.0]), x == [1, 0, 3]), (t != 2, x != 2)]:
        assert got.dtype == np.bool_
        np.testing.assert_array_equal(got.data, want)


# --- unary ops --------------------------------------------------------------------------------------

UNARY = {
    "exp": (lambda t: t.exp(), np.exp, "normal"),
    "log": (lambda t: t.log(), np.log, "positive"),
    "sqrt": (lambda t: t.sqrt(), np.sqrt, "positive"),
    "abs": (lambda t: abs(t), np.abs, "normal"),
    "tanh": (lambda t: t.tanh(), np.tanh, "normal"),
    "clip": (lambda t: t.clip(-0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7), "normal"),
    "clip_lo": (lambda t: t.clip(lo=0.1), lambda x: np.clip(x, 0.1, None), "normal"),
    "clip_hi": (lambda t: t.clip(hi=-0.2), lambda x: np.clip(x, None, -0.2), "normal"),
}


@checks
@given(shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=4), op=st.sampled_from(sorted(UNARY)), seed=seeds)
def test_unary_ops_match_numpy(shape, op, seed):
    fn, ref, kind = UNARY[op]
    x = arr(shape, seed, kind)
    close(fn(Tensor(x)), ref(x), 1e-12)


def test_unary_errors():
    t = Tensor(np.ones(3))
    with pytest.raises(ValueError):
        t.clip(1, 0)
    with pytest.raises(ValueError):
        t.clip()


@checks
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=3), seed=seeds)
def test_where_broadcasts_like_numpy(shapes, seed):
    sc, sa, sb = shapes.input_shapes
    cond = np.random.default_rng(seed).random(sc) > 0.5
    a, b = arr(sa, seed + 1), arr(sb, seed + 2)
    close(where(Tensor(cond), Tensor(a), Tensor(b)), np.where(cond, a, b), 0)
    close(where(cond, Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)), np.where(cond, a, b), 0)
    close(where(cond, Tensor(a), 0.0), np.where(cond, a, 0.0), 0)


def test_where_needs_a_boolean_condition():
    t = Tensor(np.ones(3))
    with pytest.raises(TypeError):
        where(t, t, t)


def test_astype():
    t = Tensor(np.array([1.7, -2.2], np.float32))
    assert t.astype(np.float64).dtype == np.float64
    np.testing.assert_array_equal(t.astype(np.float64).data, t.data.astype(np.float64))


# --- matmul -----------------------------------------------------------------------------------------

MATMUL_SHAPES = [((4, 3), (3, 5)), ((3,), (3,)), ((4, 3), (3,)), ((3,), (3, 5)), ((2, 4, 3), (3, 5)),
                 ((2, 4, 3), (2, 3, 5)), ((2, 1, 4, 3), (5, 3, 2)), ((4, 3), (2, 3, 5)), ((1, 1), (1, 1)),
                 ((2, 4, 3), (3,)), ((3,), (2, 3, 5))]


@pytest.mark.parametrize("sa, sb", MATMUL_SHAPES)
def test_matmul_matches_numpy(sa, sb):
    a, b = arr(sa, 1), arr(sb, 2)
    close(Tensor(a) @ Tensor(b), a @ b, 1e-12)
    close(Tensor(a).matmul(Tensor(b)), a @ b, 1e-12)


def test_matmul_against_hand_loops():
    a, b = arr((4, 3), 3, dtype=np.float32), arr((3, 5), 4, dtype=np.float32)
    want = np.zeros((4, 5))
    for i in range(4):
        for j in range(5):
            want[i, j] = sum(float(a[i, p]) * float(b[p, j]) for p in range(3))
    out = Tensor(a) @ Tensor(b)
    assert out.dtype == np.float32
    close(out, want, 1e-5)


@checks
@given(n=st.integers(1, 4), k=st.integers(1, 4), m=st.integers(1, 4), batch=st.lists(st.integers(1, 3), max_size=2),
       seed=seeds)
def test_matmul_batched_random_shapes(n, k, m, batch, seed):
    a, b = arr(tuple(batch) + (n, k), seed), arr((k, m), seed + 1)
    close(Tensor(a) @ Tensor(b), a @ b, 1e-12)
    b2 = arr(tuple(batch) + (k, m), seed + 2)
    close(Tensor(a) @ Tensor(b2), a @ b2, 1e-12)


def test_matmul_with_arrays_on_either_side():
    a, b = arr((4, 3), 5), arr((3, 2), 6)
    close(a @ Tensor(b), a @ b, 1e-12)
    close(Tensor(a) @ b, a @ b, 1e-12)


@pytest.mark.parametrize("sa, sb", [((4, 3), (4, 3)), ((2, 3), (2,)), ((5,), (4,))])
def test_matmul_errors_name_both_shapes(sa, sb):
    with pytest.raises(ValueError) as e:
        Tensor(np.ones(sa)) @ Tensor(np.ones(sb))
    names_both(e, sa, sb)


def test_matmul_rejects_batch_dims_that_do_not_broadcast():
    with pytest.raises(ValueError):
        Tensor(np.ones((2, 4, 3))) @ Tensor(np.ones((3, 3, 2)))


def test_matmul_rejects_scalars():
    with pytest.raises(ValueError):
        Tensor(2.0) @ Tensor(np.ones(3))


# --- reductions -------------------------------------------------------------------------------------

@st.composite
def shape_and_axis(draw, min_dims=1):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=4, min_side=1, max_side=4))
    nd = len(shape)
    axis = draw(st.none() | st.integers(-nd, nd - 1) |
                st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True).map(tuple))
    return shape, axis


@checks
@given(sa=shape_and_axis(), keepdims=st.booleans(), seed=seeds)
def test_reductions_match_numpy(sa, keepdims, seed):
    shape, axis = sa
    x = arr(shape, seed)
    t = Tensor(x)
    kw = dict(axis=axis, keepdims=keepdims)
    close(t.sum(**kw), np.asarray(x.sum(**kw)), 1e-12)
    close(t.mean(**kw), np.asarray(x.mean(**kw)), 1e-12)
    close(t.max(**kw), np.asarray(x.max(**kw)), 0)
    close(t.min(**kw), np.asarray(x.min(**kw)), 0)
    close(t.var(**kw), np.asarray(x.var(**kw)), 1e-10)


def test_reductions_on_float32_and_scalars():
    x = arr((3, 4, 5), 7, dtype=np.float32)
    t = Tensor(x)
    close(t.sum(axis=(-1, -2)), x.sum(axis=(-1, -2)), 1e-5)
    close(t.var(axis=0, ddof=1), x.var(axis=0, ddof=1), 1e-5)
    assert t.sum().dtype == np.float32
    assert Tensor(5.0).sum().item() == 5.0
    assert t.argmax().item() == x.argmax()
    np.testing.assert_array_equal(t.argmax(axis=1).data, x.argmax(axis=1))
    assert t.argmax(axis=1, keepdims=True).shape == (3, 1, 5)


def test_reduction_errors():
    t = Tensor(np.ones((3, 4, 5)))
    with pytest.raises(ValueError, match="3"):
        t.sum(axis=3)
    with pytest.raises(ValueError):
        zeros(0).max()
    with pytest.raises(ValueError):
        Tensor([1.0]).var(ddof=1)


# --- shape ops --------------------------------------------------------------------------------------

def test_reshape_permute_transpose():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    t = Tensor(x)
    np.testing.assert_array_equal(t.reshape(6, 4).data, x.reshape(6, 4))
    np.testing.assert_array_equal(t.reshape((4, -1)).data, x.reshape(4, -1))
    np.testing.assert_array_equal(t.view(-1).data, x.reshape(-1))
    np.testing.assert_array_equal(t.permute(2, 0, 1).data, x.transpose(2, 0, 1))
    np.testing.assert_array_equal(t.permute((1, 2, 0)).data, x.transpose(1, 2, 0))
    np.testing.assert_array_equal(t.transpose().data, x.swapaxes(-2, -1))
    np.testing.assert_array_equal(t.transpose(0, 2).data, x.swapaxes(0, 2))
    np.testing.assert_array_equal(t.T.data, x.T)
    np.testing.assert_array_equal(t.flatten().data, x.ravel())
    assert t.flatten(1).shape == (2, 12)
    assert t.flatten(0, 1).shape == (6, 4)
    assert Tensor(np.ones((1, 3, 1))).squeeze().shape == (3,)
    assert Tensor(np.ones((1, 3, 1))).squeeze(0).shape == (3, 1)
    assert t.unsqueeze(0).shape == (1, 2, 3, 4)
    assert t.unsqueeze(-1).shape == (2, 3, 4, 1)


@checks
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=4), seed=seeds, data=st.data())
def test_permute_and_reshape_random(shape, seed, data):
    x = arr(shape, seed)
    axes = data.draw(st.permutations(range(len(shape))))
    np.testing.assert_array_equal(Tensor(x).permute(*axes).data, x.transpose(axes))
    flat = Tensor(x).reshape(-1)
    np.testing.assert_array_equal(flat.data, x.reshape(-1))
    np.testing.assert_array_equal(flat.reshape(shape).data, x)


def test_shape_op_errors_name_the_shape():
    t = Tensor(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        t.reshape(5, 5)
    with pytest.raises(ValueError):
        t.reshape(-1, -1)
    with pytest.raises(ValueError):
        t.permute(0, 1)
    with pytest.raises(ValueError, match="3"):
        t.squeeze(1)


INDICES = [1, -1, (slice(None), slice(1, 3), slice(None, None, 2)), (Ellipsis, -1), (None, 0),
           np.array([1, 0, 1]), (0, np.array([2, 0, 2])), (slice(None), 1, slice(1, None)), (1, 2, 3)]


@pytest.mark.parametrize("index", INDICES, ids=range(len(INDICES)))
def test_getitem_matches_numpy(index):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(Tensor(x)[index].data, x[index])


def test_getitem_with_masks_and_tensor_indices():
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    t = Tensor(x)
    np.testing.assert_array_equal(t[x > 10].data, x[x > 10])
    np.testing.assert_array_equal(t[Tensor(x > 10)].data, x[x > 10])
    np.testing.assert_array_equal(t[Tensor(np.array([1, 0, 1]))].data, x[[1, 0, 1]])
    with pytest.raises(IndexError, match=r"\(2, 3, 4\)"):
        t[5]


def test_concat_stack_pad():
    a, b = arr((2, 3), 1, dtype=np.float32), arr((4, 3), 2, dtype=np.float32)
    np.testing.assert_array_equal(concat([Tensor(a), Tensor(b)]).data, np.concatenate([a, b]))
    np.testing.assert_array_equal(concat([Tensor(a), Tensor(a)], axis=-1).data, np.concatenate([a, a], axis=-1))
    np.testing.assert_array_equal(stack([Tensor(a), Tensor(a)]).data, np.stack([a, a]))
    np.testing.assert_array_equal(stack([Tensor(a), Tensor(a)], axis=2).data, np.stack([a, a], axis=2))
    np.testing.assert_array_equal(Tensor(a).pad(((1, 0), (2, 2))).data, np.pad(a, ((1, 0), (2, 2))))
    np.testing.assert_array_equal(Tensor(a).pad(((0, 1), (1, 0)), value=-3.0).data,
                                  np.pad(a, ((0, 1), (1, 0)), constant_values=-3.0))


def test_concat_stack_pad_errors():
    a, b = Tensor(np.ones((2, 3))), Tensor(np.ones((4, 3)))
    with pytest.raises(ValueError) as e:
        concat([a, b], axis=1)
    names_both(e, (2, 3), (4, 3))
    with pytest.raises(ValueError) as e:
        stack([a, b])
    names_both(e, (2, 3), (4, 3))
    with pytest.raises(ValueError):
        concat([])
    with pytest.raises(ValueError):
        a.pad(((1, 1),))


# --- the graph every op records ---------------------------------------------------------------------

def test_ops_on_a_tensor_that_wants_a_gradient_record_it():
    x = Tensor(arr((2, 3), 1), requires_grad=True)
    c = Tensor(arr((2, 3), 2))
    results = [x + c, c - x, x * 2, 1 / (x * x + 1), -x, x ** 2, x @ Tensor(np.ones((3, 2))), x.sum(), x.mean(0),
               x.max(1), x.reshape(3, 2), x.T, x[0], concat([x, c]), x.pad(((1, 1), (0, 0))), x.exp(), x.tanh(),
               abs(x), x.clip(-1, 1), maximum(x, c), where(c.data > 0, x, c), x.astype(np.float32)]
    for out in results:
        assert out.requires_grad, out
    for out in [c + 1, c * c, c.sum(), c.reshape(-1), c.exp(), where(c.data > 0, c, 0.0)]:
        assert not out.requires_grad


def test_ops_leave_their_inputs_untouched():
    x = arr((3, 4), 9)
    keep = x.copy()
    t = Tensor(x)
    for out in [t + 1, t * t, t / 3, -t, t.exp(), t.reshape(4, 3), t.T, t.sum(0), t.clip(0, 1), t.pad(((1, 1), (1, 1)))]:
        out.data
    np.testing.assert_array_equal(t.data, keep)
