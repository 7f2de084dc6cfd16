"""Protected tests for module 09 (Autograd): every op's backward rule against central differences,
and the engine (topological order, accumulation, broadcasting, freeing, no_grad, detach).

Run against the exported package; imports modules 02-07 and 09 only. The numerical gradient is
computed here, independently of tinytorch's own `gradcheck`: float64 inputs, a random projection
vector v, and (L(x + h·e_i) - L(x - h·e_i)) / 2h for L = sum(f(x) · v). Hypothesis draws the
shapes and the values, in the style of minitorch's tests. Ops with kinks (max, abs, clip, maximum,
ReLU) get values kept well away from the kinks and from ties.
"""
import sys

import numpy as np
import pytest
import hypothesis.extra.numpy as hnp
from hypothesis import given, settings, strategies as st

import tinytorch.autograd  # noqa: F401  (attaches the backward rules)
from tinytorch.autograd import no_grad
from tinytorch.tensor import Tensor, concat, maximum, stack, where
from tinytorch.activations import gelu, leaky_relu, log_softmax, relu, sigmoid, softmax
from tinytorch.layers import Linear
from tinytorch.spatial import BatchNorm2d, avg_pool2d, conv2d, max_pool2d
from tinytorch.attention import LayerNorm, MultiHeadAttention

checks = settings(max_examples=20, deadline=None, derandomize=True, database=None)
seeds = st.integers(0, 2**32 - 1)


# --- the reference: central differences -------------------------------------------------------------

def values(shape, seed, kind="normal"):
    "float64 values: normal; positive (>= 0.5); or separated (distinct, >= 0.1 apart, >= 0.05 from 0)."
    rng = np.random.default_rng(seed)
    if kind == "normal": return rng.standard_normal(shape)
    if kind == "positive": return np.abs(rng.standard_normal(shape)) + 0.5
    n = int(np.prod(shape, dtype=int))
    vals = (np.arange(n) - n // 2) * 0.1 + 0.05 + rng.uniform(-0.01, 0.01, n)
    return rng.permutation(vals).reshape(shape)


def numeric_grads(fn, arrays, v, h=1e-6):
    "d sum(fn(*arrays) * v) / d arrays, by central differences on fresh constant tensors."
    def loss(arrs):
        return float(np.sum(fn(*[Tensor(a) for a in arrs]).data * v))
    grads = []
    for k, a in enumerate(arrays):
        g = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            up = [x.copy() for x in arrays]; up[k][idx] += h
            down = [x.copy() for x in arrays]; down[k][idx] -= h
            g[idx] = (loss(up) - loss(down)) / (2 * h)
        grads.append(g)
    return grads


def check_grads(fn, *arrays, wants=None, atol=1e-6, rtol=1e-5, seed=0):
    "Backward of fn at `arrays` (float64) equals central differences; returns the output."
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    wants = [True] * len(arrays) if wants is None else wants
    leaves = [Tensor(a.copy(), requires_grad=w) for a, w in zip(arrays, wants)]
    out = fn(*leaves)
    assert isinstance(out, Tensor) and out.requires_grad
    v = np.random.default_rng(seed).standard_normal(out.shape)
    out.backward(v)
    numeric = numeric_grads(fn, arrays, v)
    for i, (leaf, want, num) in enumerate(zip(leaves, wants, numeric)):
        if not want:
            assert leaf.grad is None, f"input {i} does not want a gradient but got one"
            continue
        assert leaf.grad is not None, f"input {i} got no gradient"
        assert leaf.grad.shape == leaf.shape, f"input {i}: grad shape {leaf.grad.shape} != {leaf.shape}"
        np.testing.assert_allclose(leaf.grad.data, num, atol=atol, rtol=rtol, err_msg=f"input {i}")
    return out


# --- elementwise binary ops with broadcasting -------------------------------------------------------

BINARY = {
    "add": (lambda a, b: a + b, "normal", "normal"),
    "sub": (lambda a, b: a - b, "normal", "normal"),
    "mul": (lambda a, b: a * b, "normal", "normal"),
    "div": (lambda a, b: a / b, "normal", "positive"),
    "maximum": (lambda a, b: maximum(a, b), "separated", "offgrid"),
    "mixed": (lambda a, b: (a * 2 - b) / (b * b + 1) + a * a, "normal", "normal"),
}


@checks
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=3),
       op=st.sampled_from(sorted(BINARY)), seed=seeds, wants=st.sampled_from([(True, True), (True, False), (False, True)]))
def test_binary_ops_with_broadcasting(shapes, op, seed, wants):
    fn, ka, kb = BINARY[op]
    sa, sb = shapes.input_shapes
    a = values(sa, seed, ka)
    # off-grid: multiples of 0.1 while the separated values sit near 0.05 + k/10: never a tie
    b = np.random.default_rng(seed + 1).integers(-12, 12, sb) * 0.1 if kb == "offgrid" else values(sb, seed + 1, kb)
    check_grads(fn, a, b, wants=list(wants), seed=seed)


@checks
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=3), seed=seeds, c=st.floats(0.5, 3.0))
def test_ops_with_python_scalars_on_either_side(shape, seed, c):
    x = values(shape, seed, "positive")
    check_grads(lambda t: (c + t) * (t - c) + c / t - (c - t) * c + -t, x, seed=seed)


@checks
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=3), seed=seeds,
       p=st.sampled_from([2, 3, 0.5, -1, -1.5, 1, 0.0]))
def test_pow_constant_exponent(shape, seed, p):
    check_grads(lambda t: t ** p, values(shape, seed, "positive"), seed=seed)


def test_pow_with_tensor_exponent_and_number_base():
    x, e = values((2, 3), 1, "positive"), values((2, 3), 2)
    check_grads(lambda a, b: a ** b, x, e)
    check_grads(lambda a: 2 ** a + a ** Tensor(np.float64(1.7)), x)


def test_mul_and_div_by_hand():
    a, b = Tensor([3.0], requires_grad=True), Tensor([5.0], requires_grad=True)
    (a * b).backward(np.array([2.0]))
    np.testing.assert_allclose(a.grad.data, [10.0]); np.testing.assert_allclose(b.grad.data, [6.0])
    a.grad = b.grad = None
    (a / b).backward(np.array([1.0]))
    np.testing.assert_allclose(a.grad.data, [1 / 5]); np.testing.assert_allclose(b.grad.data, [-3 / 25])
    x = Tensor([3.0], requires_grad=True)
    (x ** 3).backward(np.array([1.0]))
    np.testing.assert_allclose(x.grad.data, [27.0])


# --- matmul -----------------------------------------------------------------------------------------

MATMUL_SHAPES = [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4, 5), (2, 5, 3)), ((2, 1, 3, 4), (5, 4, 2)),
                 ((4,), (4, 3)), ((4, 3), (3,)), ((4,), (4,)), ((3,), (2, 3, 5)), ((2, 5, 3), (3,)),
                 ((2, 3, 4), (2, 4, 2)), ((1, 1), (1, 1))]


@pytest.mark.parametrize("sa, sb", MATMUL_SHAPES)
def test_matmul(sa, sb):
    check_grads(lambda a, b: a @ b, values(sa, 1), values(sb, 2))


@checks
@given(n=st.integers(1, 3), k=st.integers(1, 3), m=st.integers(1, 3), batch=st.lists(st.integers(1, 2), max_size=2),
       seed=seeds, wants=st.sampled_from([(True, True), (True, False), (False, True)]), shared=st.booleans())
def test_matmul_random_shapes(n, k, m, batch, seed, wants, shared):
    sb = (k, m) if shared else tuple(batch) + (k, m)
    check_grads(lambda a, b: a @ b, values(tuple(batch) + (n, k), seed), values(sb, seed + 1),
                wants=list(wants), seed=seed)


def test_matmul_weight_gradient_by_hand():
    x, w = values((4, 3), 0), values((3, 2), 1)
    W = Tensor(w, requires_grad=True)
    (Tensor(x) @ W).sum().backward()
    np.testing.assert_allclose(W.grad.data, x.T @ np.ones((4, 2)))


# --- reductions -------------------------------------------------------------------------------------

@st.composite
def shape_and_axis(draw, min_dims=0):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=1, max_side=3))
    nd = len(shape)
    axes = [st.none()]
    if nd: axes += [st.integers(-nd, nd - 1), st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True).map(tuple)]
    return shape, draw(st.one_of(*axes))


REDUCTIONS = {
    "sum": (lambda t, **kw: t.sum(**kw), "normal"),
    "mean": (lambda t, **kw: t.mean(**kw), "normal"),
    "max": (lambda t, **kw: t.max(**kw), "separated"),
    "min": (lambda t, **kw: t.min(**kw), "separated"),
    "var": (lambda t, **kw: t.var(**kw), "normal"),
}


@checks
@given(sa=shape_and_axis(), keepdims=st.booleans(), op=st.sampled_from(sorted(REDUCTIONS)), seed=seeds)
def test_reductions(sa, keepdims, op, seed):
    shape, axis = sa
    fn, kind = REDUCTIONS[op]
    check_grads(lambda t: fn(t, axis=axis, keepdims=keepdims), values(shape, seed, kind), seed=seed)


def test_var_with_ddof():
    check_grads(lambda t: t.var(axis=0, ddof=1), values((4, 3), 5))


def test_max_ties_split_the_gradient_evenly():
    t = Tensor([1.0, 3.0, 3.0, 2.0], requires_grad=True)
    t.max().backward()
    np.testing.assert_array_equal(t.grad.data, [0, 0.5, 0.5, 0])
    t = Tensor([[1.0, 1.0], [0.0, 2.0]], requires_grad=True)
    t.max(axis=1).sum().backward()
    np.testing.assert_array_equal(t.grad.data, [[0.5, 0.5], [0, 1]])


# --- shape ops and indexing -------------------------------------------------------------------------

SHAPE_OPS = [lambda x: x.reshape(6, 4), lambda x: x.reshape(-1), lambda x: x.permute(2, 0, 1), lambda x: x.T,
             lambda x: x.transpose(0, 1), lambda x: x.flatten(1), lambda x: x.unsqueeze(1).squeeze(1),
             lambda x: x[1], lambda x: x[:, 1:3, ::2], lambda x: x[..., -1], lambda x: x[None, 0, :, 1],
             lambda x: x[x.data > 0], lambda x: x[np.array([1, 0, 1, 1])], lambda x: x[0, np.array([2, 2, 0])],
             lambda x: x[:, np.array([[0, 1], [1, 1]]), 3], lambda x: x[np.array([True, False])],
             lambda x: x[[1, 1]], lambda x: x[Tensor(np.array([0, 0, 1]))]]


@pytest.mark.parametrize("k", range(len(SHAPE_OPS)))
def test_shape_ops_and_indexing(k):
    check_grads(SHAPE_OPS[k], values((2, 3, 4), k))


@checks
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=3), seed=seeds, data=st.data())
def test_permute_random(shape, seed, data):
    axes = data.draw(st.permutations(range(len(shape))))
    check_grads(lambda t: t.permute(*axes) * Tensor(values(tuple(shape[a] for a in axes), seed + 1)),
                values(shape, seed), seed=seed)


def test_repeated_indices_accumulate():
    emb = Tensor(np.zeros((5, 2)), requires_grad=True)
    emb[Tensor(np.array([3, 3, 0, 3]))].sum().backward()
    np.testing.assert_array_equal(emb.grad.data[:, 0], [1, 0, 0, 3, 0])


def test_concat_stack_pad():
    a, b, c = values((2, 3), 1), values((4, 3), 2), values((2, 5), 3)
    check_grads(lambda a, b: concat([a, b, a]), a, b)
    check_grads(lambda a, c: concat([a, c], axis=-1), a, c)
    check_grads(lambda a: concat([a, Tensor(np.ones((4, 3)))]), a)
    check_grads(lambda a, b: concat([a, b]), a, b, wants=[False, True])
    check_grads(lambda a: stack([a, a * 2, a], axis=1), a)
    check_grads(lambda a: a.pad(((1, 0), (2, 3))), a)
    check_grads(lambda x: x.pad(((0, 0), (1, 1), (1, 1)), value=5.0), values((2, 3, 3), 4))


# --- unary ops, maximum, where, casts ---------------------------------------------------------------

UNARY = {
    "exp": (lambda t: t.exp(), "normal"), "log": (lambda t: t.log(), "positive"),
    "sqrt": (lambda t: t.sqrt(), "positive"), "abs": (lambda t: abs(t), "separated"),
    "tanh": (lambda t: t.tanh(), "normal"), "clip": (lambda t: t.clip(-0.3, 0.2), "separated"),
    "clip_lo": (lambda t: t.clip(lo=0.02), "separated"), "clip_hi": (lambda t: t.clip(hi=-0.02), "separated"),
    "relu": (lambda t: maximum(t, 0.0), "separated"), "neg": (lambda t: -t, "normal"),
}


@checks
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4), op=st.sampled_from(sorted(UNARY)), seed=seeds)
def test_unary_ops(shape, op, seed):
    fn, kind = UNARY[op]
    check_grads(fn, values(shape, seed, kind), seed=seed)


@checks
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=3), seed=seeds)
def test_where_with_broadcasting(shapes, seed):
    sc, sa, sb = shapes.input_shapes
    cond = np.random.default_rng(seed).random(sc) > 0.5
    check_grads(lambda a, b: where(cond, a, b), values(sa, seed + 1), values(sb, seed + 2), seed=seed)


def test_maximum_ties_split_evenly_and_casts_return_the_input_dtype():
    a, b = Tensor([1.0, 2.0], requires_grad=True), Tensor([1.0, 0.0], requires_grad=True)
    maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad.data, [0.5, 1.0])
    np.testing.assert_array_equal(b.grad.data, [0.5, 0.0])
    h = Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    (h.astype(np.float64) * 3).sum().backward()
    assert h.grad.dtype == np.float32
    np.testing.assert_array_equal(h.grad.data, [3.0, 3.0])
    d = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True)
    (d.astype(np.float32) * Tensor(np.array([1.0, -2.0, 0.5], np.float32))).sum().backward()
    assert d.grad.dtype == np.float64
    np.testing.assert_array_equal(d.grad.data, [1.0, -2.0, 0.5])


# --- the earlier modules' layers differentiate without being rewritten ------------------------------

def test_activations():
    x, g = values((3, 5), 1), values((3, 5), 2, "separated")
    check_grads(relu, g)
    check_grads(lambda t: leaky_relu(t, 0.1), g)
    for fn in (sigmoid, gelu, lambda t: softmax(t, axis=0), lambda t: log_softmax(t, axis=-1)):
        check_grads(fn, x)


def test_linear_layernorm_attention():
    lin = Linear(4, 3).astype(np.float64)
    check_grads(lambda x, w, b: x @ w.T + b, values((5, 4), 1), lin.weight.data, values(3, 2))
    check_grads(lambda x: lin(x), values((2, 5, 4), 3))
    ln = LayerNorm(4).astype(np.float64)
    check_grads(lambda x: ln(x), values((3, 4), 4))
    mha = MultiHeadAttention(4, 2).astype(np.float64)
    check_grads(lambda x: mha(x), values((1, 3, 4), 5), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("stride, padding", [(1, 0), (1, 1), (2, 1), ((2, 1), (0, 1))])
def test_conv2d(stride, padding):
    check_grads(lambda x, w, b: conv2d(x, w, b, stride=stride, padding=padding),
                values((2, 2, 5, 4), 1), values((3, 2, 3, 2), 2), values(3, 3))


@pytest.mark.parametrize("k, stride, padding", [(2, None, 0), (3, 1, 1), (3, 2, 0), ((2, 3), (1, 2), (1, 1))])
def test_pooling(k, stride, padding):
    check_grads(lambda x: max_pool2d(x, k, stride, padding), values((2, 2, 5, 6), 4, "separated"))
    check_grads(lambda x: avg_pool2d(x, k, stride, padding), values((2, 2, 5, 6), 5))


def ref_max_pool_grad(x, k, stride, padding, g):
    "Max pooling's backward by loops: each window's gradient goes to its first maximum in row-major order (PyTorch's rule)."
    (kh, kw), (sh, sw), (ph, pw) = k, stride, padding
    n, c, h, w = x.shape
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), -np.inf)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    dx = np.zeros_like(xp)
    for i in range(g.shape[2]):
        for j in range(g.shape[3]):
            first = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].reshape(n, c, -1).argmax(axis=2)   # first maximum
            for (a, b), f in np.ndenumerate(first):
                dx[a, b, i * sh + f // kw, j * sw + f % kw] += g[a, b, i, j]
    return dx[:, :, ph:ph + h, pw:pw + w]


@pytest.mark.parametrize("batch_last", [False, True])
@pytest.mark.parametrize("k, stride, padding", [((2, 2), (2, 2), (0, 0)), ((3, 3), (1, 1), (1, 1)),
                                                ((3, 2), (2, 1), (1, 1)), ((2, 3), (3, 2), (0, 1))])
def test_max_pool_ties_go_to_the_first_offset(k, stride, padding, batch_last):
    "Central differences cannot see ties; the loop reference (checked against torch.nn.functional.max_pool2d) can."
    rng = np.random.default_rng(7)
    x = rng.integers(0, 3, (2, 3, 6, 7)).astype(np.float64)               # values 0, 1, 2: ties in most windows
    data = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2) if batch_last else x.copy()
    leaf = Tensor(data, requires_grad=True)                                 # batch_last: a conv output's (C, H, W, N) memory
    assert leaf.data.flags.c_contiguous != batch_last
    out = max_pool2d(leaf, k, stride, padding)
    g = rng.standard_normal(out.shape)
    out.backward(g)
    np.testing.assert_allclose(leaf.grad.data, ref_max_pool_grad(x, k, stride, padding, g), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(max_pool2d(Tensor(np.ones((1, 1, 2, 4))), 2).data, np.ones((1, 1, 1, 2)))
    ones = Tensor(np.ones((1, 1, 2, 4)), requires_grad=True)
    max_pool2d(ones, 2).backward(np.array([[[[1.0, 2.0]]]]))
    np.testing.assert_array_equal(ones.grad.data, [[[[1, 0, 2, 0], [0, 0, 0, 0]]]])   # by hand: top-left of each window


@pytest.mark.parametrize("batch_last", [False, True])
def test_a_nan_in_a_pooling_window_takes_its_gradient(batch_last):
    "The window's output is NaN, and its gradient goes to the NaN (the last one, as torch.nn.functional.max_pool2d does)."
    x = np.array([[[[1.0, np.nan, 0.0, 5.0], [np.nan, 2.0, 3.0, 4.0]]]])
    data = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2) if batch_last else x.copy()
    leaf = Tensor(data, requires_grad=True)
    out = max_pool2d(leaf, 2)
    assert np.isnan(out.data[0, 0, 0, 0]) and out.data[0, 0, 0, 1] == 5.0
    out.backward(np.array([[[[1.0, 2.0]]]]))
    np.testing.assert_array_equal(leaf.grad.data, [[[[0, 0, 0, 2], [1, 0, 0, 0]]]])   # by hand: the later NaN; the 5


def test_batchnorm_training_mode():
    bn = BatchNorm2d(2).astype(np.float64)
    check_grads(lambda x, g, b: (x - x.mean(axis=(0, 2, 3), keepdims=True)) * g.reshape(1, 2, 1, 1) + b.reshape(1, 2, 1, 1),
                values((3, 2, 2, 2), 1), values(2, 2), values(2, 3))
    check_grads(lambda x: bn(x), values((3, 2, 2, 2), 4), atol=1e-5, rtol=1e-4)


# --- the engine -------------------------------------------------------------------------------------

def test_a_tensor_used_twice_accumulates():
    x = Tensor([2.0], requires_grad=True)
    h = x * 3
    y = h + h * x              # dy/dx = 3 + 6x = 15
    y.backward()
    np.testing.assert_allclose(x.grad.data, [15.0])
    assert h.grad is None      # only leaves keep .grad
    w = Tensor(np.array([[1.0, 2.0], [3.0, 4.0]]), requires_grad=True)
    (w * w + w).sum().backward()
    np.testing.assert_allclose(w.grad.data, 2 * w.data + 1)


def test_diamond_graph():
    check_grads(lambda x: (x.exp() * x.tanh() + x.exp() / (x * x + 1)).sum(), values((3,), 1))


def test_broadcast_bias_gets_the_column_sums():
    x = Tensor(np.ones((4, 3)))
    b = Tensor(np.zeros(3), requires_grad=True)
    ((x + b) * Tensor([1.0, 2.0, 3.0])).sum().backward()
    np.testing.assert_array_equal(b.grad.data, [4, 8, 12])
    assert x.grad is None


def test_gradients_add_up_over_backward_calls():
    a = Tensor([1.0, 2.0], requires_grad=True)
    (a * 3).sum().backward()
    (a * 3).sum().backward()
    np.testing.assert_array_equal(a.grad.data, [6, 6])
    a.zero_grad()
    assert a.grad is None


def test_leaf_gradients_are_tensors_of_the_leaf_dtype():
    x = Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    (x * x).sum().backward()
    assert isinstance(x.grad, Tensor) and x.grad.dtype == np.float32


def test_backward_errors_name_the_shapes():
    v = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"\(3,\)"):
        (v * 2).backward()                                  # non-scalar without a gradient
    with pytest.raises(ValueError) as e:
        (v * 2).backward(np.ones(2))
    assert "(2,)" in str(e.value) and "(3,)" in str(e.value)
    with pytest.raises(RuntimeError):
        Tensor([1.0]).backward()                            # nothing requires grad
    (v * 2).backward(np.array([1.0, 0.0, -1.0], np.float32))
    np.testing.assert_array_equal(v.grad.data, [2, 0, -2])


def test_graph_is_freed_unless_retained():
    v = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = (v * v).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()
    v.grad = None
    y = (v * v).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(v.grad.data, 4 * v.data)


def test_deep_graph_does_not_recurse():
    x = Tensor([1.0], requires_grad=True)
    c, z = Tensor([1.0001]), Tensor([0.0])
    y = x
    depth = max(5_000, 3 * sys.getrecursionlimit())
    for _ in range(depth): y = y * c + z
    y.backward()
    np.testing.assert_allclose(x.grad.data, [1.0001 ** depth], rtol=1e-3)


def test_no_grad_and_detach():
    w = Tensor([1.0, 2.0], requires_grad=True)
    with no_grad():
        y = w * 2
    assert not y.requires_grad
    assert (w * 2).requires_grad                                  # restored on exit

    @no_grad
    def predict(x): return x * 2
    assert not predict(w).requires_grad
    np.testing.assert_array_equal(predict(w).data, [2, 4])
    with pytest.raises(KeyError):
        with no_grad(): raise KeyError("inside")
    assert (w * 2).requires_grad                                  # restored after an exception

    d = w.detach()
    assert not d.requires_grad and np.shares_memory(d.data, w.data)
    (w * w.detach()).sum().backward()
    np.testing.assert_array_equal(w.grad.data, [1, 2])           # only the attached factor counts


def test_a_tiny_network_learns_xor():
    rng = np.random.default_rng(1)
    X = Tensor(np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]))
    Y = Tensor(np.array([[0.0], [1.0], [1.0], [0.0]]))
    W1, b1 = Tensor(rng.standard_normal((2, 8)), requires_grad=True), Tensor(np.zeros(8), requires_grad=True)
    W2, b2 = Tensor(rng.standard_normal((8, 1)) * 0.5, requires_grad=True), Tensor(np.zeros(1), requires_grad=True)
    for _ in range(500):
        mse = (((X @ W1 + b1).tanh() @ W2 + b2 - Y) ** 2).mean()
        mse.backward()
        for p in (W1, b1, W2, b2):
            p.data -= 0.1 * p.grad.data
            p.grad = None
    pred = ((X @ W1 + b1).tanh() @ W2 + b2).data.ravel()
    np.testing.assert_array_equal((pred > 0.5).astype(int), [0, 1, 1, 0])
