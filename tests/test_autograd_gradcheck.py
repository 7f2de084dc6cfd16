"""Every primitive op of tensor.py (and the composites built on them) against central differences.

Hypothesis draws the shapes (broadcasting pairs, reduction axes, indices, pad widths, ...) and a seed
for the values; `gradcheck` (tinytorch.autograd) compares analytic and numeric gradients in float64.
Ops with kinks (max, abs, clip, maximum, ReLU) get well-separated values away from the kink.
"""
import numpy as np
import pytest
import hypothesis.extra.numpy as hnp
from hypothesis import HealthCheck, given, settings, strategies as st

import tinytorch.autograd  # noqa: F401  (attaches the backward rules)
from tinytorch.autograd import gradcheck
from tinytorch.tensor import Tensor, concat, stack, maximum, where

checks = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32 - 1)


def values(shape, seed, kind="normal"):
    "float64 test values: normal, positive (>= 0.5) or a grid (distinct, >= 0.1 apart, never within 0.05 of 0)."
    rng = np.random.default_rng(seed)
    if kind == "normal": return rng.standard_normal(shape)
    if kind == "positive": return np.abs(rng.standard_normal(shape)) + 0.5
    n = int(np.prod(shape, dtype=int))
    return rng.permutation((np.arange(n) - n // 2) * 0.1 + 0.05).reshape(shape)


def leaf(shape, seed, kind="normal"): return Tensor(values(shape, seed, kind), requires_grad=True)


# --- elementwise binary ops, with every broadcasting pattern -------------------------------------------

BINARY = {
    "add": (lambda a, b: a + b, "normal", "normal"),
    "sub": (lambda a, b: a - b, "normal", "normal"),
    "mul": (lambda a, b: a * b, "normal", "normal"),
    "div": (lambda a, b: a / b, "normal", "positive"),
    "maximum": (lambda a, b: maximum(a, b), "grid", "offgrid"),
    "mixed": (lambda a, b: (a * 2 - b) / (b * b + 1) + a, "normal", "normal"),
}


@checks
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=3),
       op=st.sampled_from(sorted(BINARY)), seed=seeds)
def test_binary_ops_broadcast(shapes, op, seed):
    fn, ka, kb = BINARY[op]
    sa, sb = shapes.input_shapes
    a = leaf(sa, seed, ka)
    if kb == "offgrid":   # multiples of 0.1, while the grid sits at 0.05 + multiples of 0.1: never a tie
        b = Tensor(np.random.default_rng(seed + 1).integers(-12, 12, sb) * 0.1, requires_grad=True)
    else:
        b = leaf(sb, seed + 1, kb)
    assert gradcheck(fn, a, b)


@checks
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=3), seed=seeds)
def test_where_broadcast(shapes, seed):
    sc, sa, sb = shapes.input_shapes
    cond = np.random.default_rng(seed).random(sc) > 0.5
    assert gradcheck(lambda a, b: where(cond, a, b), leaf(sa, seed), leaf(sb, seed + 1))


# --- unary ops, scalar operands, composites ----------------------------------------------------------------

UNARY = {
    "neg": (lambda x: -x, "normal"),
    "exp": (lambda x: x.exp(), "normal"),
    "log": (lambda x: x.log(), "positive"),
    "sqrt": (lambda x: x.sqrt(), "positive"),
    "abs": (lambda x: x.abs(), "grid"),
    "tanh": (lambda x: x.tanh(), "normal"),
    "pow2": (lambda x: x ** 2, "normal"),
    "pow3": (lambda x: x ** 3, "normal"),
    "pow_half": (lambda x: x ** 0.5, "positive"),
    "pow_neg": (lambda x: x ** -1.5, "positive"),
    "pow_tensor": (lambda x: x ** Tensor(1.3, dtype=np.float64), "positive"),
    "rpow": (lambda x: 2.0 ** x, "normal"),
    "clip": (lambda x: x.clip(-0.3, 0.4), "grid"),
    "clip_lo": (lambda x: x.clip(lo=0.0), "grid"),
    "clip_hi": (lambda x: x.clip(hi=-0.1), "grid"),
    "relu": (lambda x: maximum(x, 0.0), "grid"),
    "scalars": (lambda x: (3.0 - x * 2.5) / 4 + 1, "normal"),
    "rdiv": (lambda x: 1.0 / x, "positive"),
    "sigmoid": (lambda x: 1 / (1 + (-x).exp()), "normal"),
    "softplus": (lambda x: (x.exp() + 1).log(), "normal"),
}


@checks
@given(shape=hnp.array_shapes(min_dims=0, max_dims=4, max_side=4), op=st.sampled_from(sorted(UNARY)), seed=seeds)
def test_unary_ops(shape, op, seed):
    fn, kind = UNARY[op]
    assert gradcheck(fn, leaf(shape, seed, kind))


@checks
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4), seed=seeds)
def test_cast_roundtrip(shape, seed):
    # float64 -> float32 -> float64 is the identity up to float32 rounding: a wide step keeps that rounding small
    assert gradcheck(lambda x: x.astype(np.float32).astype(np.float64) * 3, leaf(shape, seed), eps=1e-2, atol=1e-4)


def test_cast_gradient_dtype():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    (x.astype(np.float64) * 2).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad.numpy(), [2, 2, 2])


# --- matmul: batches that broadcast, 1-d operands ----------------------------------------------------------

@checks
@given(batch=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=3),
       n=st.integers(1, 4), k=st.integers(1, 4), m=st.integers(1, 4),
       vectors=st.sampled_from(["", "left", "right", "both"]), seed=seeds)
def test_matmul(batch, n, k, m, vectors, seed):
    sa = (k,) if vectors in ("left", "both") else batch.input_shapes[0] + (n, k)
    sb = (k,) if vectors in ("right", "both") else batch.input_shapes[1] + (k, m)
    assert gradcheck(lambda a, b: a @ b, leaf(sa, seed), leaf(sb, seed + 1))


@checks
@given(batch=st.sampled_from([(), (2,), (3, 2)]), seed=seeds)
def test_matmul_one_side_constant(batch, seed):
    a, w = leaf(batch + (3, 4), seed), values((4, 2), seed + 1)
    assert gradcheck(lambda a: a @ Tensor(w), a)
    assert gradcheck(lambda w: Tensor(values(batch + (3, 4), seed)) @ w, Tensor(w, requires_grad=True))


# --- reductions over random axes -----------------------------------------------------------------------------

REDUCTIONS = {"sum": "normal", "mean": "normal", "var": "normal", "max": "grid", "min": "grid"}


@checks
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=4), op=st.sampled_from(sorted(REDUCTIONS)),
       keepdims=st.booleans(), data=st.data(), seed=seeds)
def test_reductions(shape, op, keepdims, data, seed):
    nd = len(shape)
    axis = data.draw(st.one_of(st.none(), st.integers(-nd, nd - 1),
                               st.lists(st.integers(0, nd - 1), min_size=1, max_size=nd, unique=True).map(tuple)))
    x = leaf(shape, seed, REDUCTIONS[op])
    assert gradcheck(lambda x: getattr(x, op)(axis=axis, keepdims=keepdims), x)


def test_max_ties_split_evenly():
    x = Tensor([[2., 5., 5.], [1., 1., 1.]], requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0, .5, .5], [1 / 3, 1 / 3, 1 / 3]])
    y = Tensor([3., 3.], requires_grad=True)
    maximum(y, Tensor([3., 0.])).sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), [.5, 1.])


# --- indexing ------------------------------------------------------------------------------------------------

@checks
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=5), data=st.data(), seed=seeds)
def test_basic_indexing(shape, data, seed):
    index = data.draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True))
    assert gradcheck(lambda x: x[index], leaf(shape, seed))


@checks
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
       kind=st.sampled_from(["ints", "ints_2d", "int_pair", "slice_then_ints", "mask", "mask_axis0", "list"]),
       data=st.data(), seed=seeds)
def test_advanced_indexing(shape, kind, data, seed):
    def ints(n, size): return data.draw(hnp.arrays(np.int64, size, elements=st.integers(-n, n - 1)))
    if kind == "ints": index = ints(shape[0], st.integers(1, 8))            # repeats are likely: they must add up
    elif kind == "ints_2d": index = ints(shape[0], st.tuples(st.integers(1, 3), st.integers(1, 3)))
    elif kind == "list": index = ints(shape[0], st.integers(1, 6)).tolist()
    elif kind == "int_pair" and len(shape) >= 2: index = (ints(shape[0], 4), ints(shape[1], 4))
    elif kind == "slice_then_ints" and len(shape) >= 2: index = (slice(None), ints(shape[1], st.integers(1, 5)))
    elif kind == "mask_axis0": index = np.random.default_rng(seed).random(shape[0]) > 0.4
    else: index = np.random.default_rng(seed).random(shape) > 0.4
    assert gradcheck(lambda x: x[index], leaf(shape, seed))


def test_repeated_indices_accumulate():
    table = Tensor(np.zeros((4, 3)), requires_grad=True)
    ids = Tensor(np.array([[1, 1], [3, 1]]))
    (table[ids] * Tensor(np.arange(3.0))).sum().backward()
    np.testing.assert_array_equal(table.grad.numpy(), [[0, 0, 0], [0, 3, 6], [0, 0, 0], [0, 1, 2]])


# --- shapes: reshape / permute / transpose / flatten / squeeze ---------------------------------------------

@checks
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=4), data=st.data(), seed=seeds)
def test_shape_ops(shape, data, seed):
    nd = len(shape)
    kind = data.draw(st.sampled_from(["reshape", "permute", "transpose", "T", "flatten", "unsqueeze", "squeeze"]))
    if kind == "reshape":
        dims = list(data.draw(st.permutations(shape)))
        target = tuple(dims[:1] + [-1]) if data.draw(st.booleans()) else tuple(dims)
        fn = lambda x: x.reshape(target)
    elif kind == "permute":
        axes = data.draw(st.permutations(range(nd)))
        fn = lambda x: x.permute(*axes)
    elif kind == "transpose":
        d0, d1 = data.draw(st.integers(-nd, nd - 1)), data.draw(st.integers(-nd, nd - 1))
        fn = lambda x: x.transpose(d0, d1)
    elif kind == "T": fn = lambda x: x.T
    elif kind == "flatten":
        s = data.draw(st.integers(0, nd - 1)); e = data.draw(st.integers(s, nd - 1))
        fn = lambda x: x.flatten(s, e)
    elif kind == "unsqueeze":
        ax = data.draw(st.integers(-nd - 1, nd))
        fn = lambda x: x.unsqueeze(ax) * 2
    else: fn = lambda x: x.unsqueeze(0).squeeze()
    assert gradcheck(fn, leaf(shape, seed))


# --- concat / stack / pad ------------------------------------------------------------------------------------

@checks
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=3), data=st.data(), seed=seeds)
def test_concat(shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    sizes = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    pieces = []
    for i, s in enumerate(sizes):
        sh = list(shape); sh[axis] = s
        pieces.append(leaf(tuple(sh), seed + i))
    constant = Tensor(values(tuple(pieces[0].shape), seed + 99))            # a piece that needs no gradient
    assert gradcheck(lambda *ps: concat(list(ps) + [constant, ps[0]], axis=axis), *pieces)


@checks
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=3), k=st.integers(1, 3), data=st.data(), seed=seeds)
def test_stack(shape, k, data, seed):
    axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    assert gradcheck(lambda *ps: stack(ps, axis=axis), *[leaf(shape, seed + i) for i in range(k)])


@checks
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=3), data=st.data(), seed=seeds)
def test_pad(shape, data, seed):
    widths = tuple(data.draw(st.tuples(st.integers(0, 2), st.integers(0, 2))) for _ in shape)
    value = data.draw(st.floats(-2, 2))
    assert gradcheck(lambda x: x.pad(widths, value=value) * 1.5, leaf(shape, seed))


# --- compositions: the building blocks later modules use ----------------------------------------------------

@checks
@given(shape=hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=4), data=st.data(), seed=seeds)
def test_softmax_layernorm_compositions(shape, data, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    def softmax(x):
        e = (x - Tensor(x.data.max(axis=axis, keepdims=True))).exp()
        return e / e.sum(axis=axis, keepdims=True)
    def log_softmax(x):
        shifted = x - x.max(axis=axis, keepdims=True)
        return shifted - shifted.exp().sum(axis=axis, keepdims=True).log()
    def layernorm(x):
        c = x - x.mean(axis=axis, keepdims=True)
        return c / ((c * c).mean(axis=axis, keepdims=True) + 1e-5).sqrt()
    x = leaf(shape, seed)
    assert gradcheck(softmax, x)
    assert gradcheck(log_softmax, x)
    assert gradcheck(layernorm, x)


def test_activations_module():
    act = pytest.importorskip("tinytorch.activations")
    rng = np.random.default_rng(0)
    for shape in [(7,), (3, 5), (2, 3, 4)]:
        x = Tensor(values(shape, int(rng.integers(1 << 30))), requires_grad=True)
        grid = Tensor(values(shape, int(rng.integers(1 << 30)), "grid"), requires_grad=True)
        assert gradcheck(act.relu, grid)
        assert gradcheck(lambda t: act.leaky_relu(t, 0.1), grid)
        assert gradcheck(act.sigmoid, x)
        assert gradcheck(act.tanh, x)
        assert gradcheck(act.gelu, x)
        for axis in range(-len(shape), len(shape)):
            assert gradcheck(lambda t: act.softmax(t, axis), x)
            assert gradcheck(lambda t: act.log_softmax(t, axis), x)
        for layer in (act.ReLU(), act.LeakyReLU(0.2), act.Sigmoid(), act.Tanh(), act.GELU(), act.Softmax(0),
                      act.LogSoftmax(-1)):
            assert gradcheck(layer, grid)
