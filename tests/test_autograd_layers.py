"""The layers of modules 03–07 differentiate correctly, unchanged: gradcheck through their parameters.

Each layer is cast to float64 with `Module.astype` and checked with `gradcheck(lambda x, *ps: layer(x), x,
*layer.parameters())`: gradcheck perturbs the parameters in place, so the layer code is used exactly as written.
"""
import numpy as np
import pytest
import hypothesis.extra.numpy as hnp
from hypothesis import HealthCheck, given, settings, strategies as st

import tinytorch.autograd  # noqa: F401
from tinytorch.autograd import gradcheck, no_grad
from tinytorch.tensor import Tensor, manual_seed

layers = pytest.importorskip("tinytorch.layers")
checks = settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(0, 2**32 - 1)


def leaf(shape, seed, kind="normal"):
    rng = np.random.default_rng(seed)
    if kind == "grid":   # distinct values 0.1 apart: no ties inside a pooling window
        n = int(np.prod(shape))
        return Tensor(rng.permutation((np.arange(n) - n // 2) * 0.1 + 0.05).reshape(shape), requires_grad=True)
    return Tensor(rng.standard_normal(shape), requires_grad=True)


def check_layer(layer, *xs, seed_rng_each_call=None):
    "gradcheck a float64 copy of `layer` w.r.t. its inputs and every parameter."
    layer.astype(np.float64)
    params = list(layer.parameters())
    n = len(xs)
    def fn(*args):
        if seed_rng_each_call is not None: manual_seed(seed_rng_each_call)   # same dropout mask every call
        return layer(*args[:n])
    assert params, f"{type(layer).__name__} has no parameters"
    assert gradcheck(fn, *xs, *params)


# --- 04 layers, 05 dense ----------------------------------------------------------------------------------

@checks
@given(batch=hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), fan_in=st.integers(1, 5), fan_out=st.integers(1, 4),
       bias=st.booleans(), seed=seeds)
def test_linear(batch, fan_in, fan_out, bias, seed):
    manual_seed(seed % 1000)
    check_layer(layers.Linear(fan_in, fan_out, bias=bias), leaf(batch + (fan_in,), seed))


def test_dropout_with_fixed_mask():
    drop = layers.Dropout(0.4)
    x = leaf((4, 5), 0)
    assert gradcheck(lambda x: (manual_seed(3), drop(x))[1], x)
    manual_seed(3)
    y = drop(x)
    y.backward(np.ones(y.shape))
    kept = y.data != 0
    np.testing.assert_allclose(x.grad.numpy(), kept / 0.6)        # gradient = the mask, scaled
    drop.eval()
    assert drop(x) is x


def test_mlp_with_dropout():
    dense = pytest.importorskip("tinytorch.dense")
    from tinytorch.activations import GELU, Tanh
    manual_seed(0)
    check_layer(dense.MLP(3, [5, 4], 2, activation=Tanh, dropout=0.3), leaf((4, 3), 1), seed_rng_each_call=7)
    manual_seed(1)
    check_layer(dense.Sequential(layers.Linear(3, 4), GELU(), layers.Linear(4, 2)), leaf((2, 3), 2))


# --- 06 spatial ---------------------------------------------------------------------------------------------

@checks
@given(n=st.integers(1, 2), c=st.integers(1, 2), f=st.integers(1, 3), k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       stride=st.tuples(st.integers(1, 2), st.integers(1, 2)), padding=st.tuples(st.integers(0, 1), st.integers(0, 1)),
       extra=st.tuples(st.integers(0, 3), st.integers(0, 3)), bias=st.booleans(), seed=seeds)
def test_conv2d(n, c, f, k, stride, padding, extra, bias, seed):
    spatial = pytest.importorskip("tinytorch.spatial")
    manual_seed(seed % 1000)
    H, W = k[0] + extra[0], k[1] + extra[1]
    check_layer(spatial.Conv2d(c, f, k, stride=stride, padding=padding, bias=bias), leaf((n, c, H, W), seed))


@checks
@given(n=st.integers(1, 2), c=st.integers(1, 2), k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       stride=st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))), pad=st.booleans(),
       extra=st.tuples(st.integers(0, 3), st.integers(0, 3)), seed=seeds)
def test_pooling(n, c, k, stride, pad, extra, seed):
    spatial = pytest.importorskip("tinytorch.spatial")
    padding = (k[0] // 2, k[1] // 2) if pad else 0
    shape = (n, c, k[0] + extra[0], k[1] + extra[1])
    assert gradcheck(lambda x: spatial.MaxPool2d(k, stride, padding)(x), leaf(shape, seed, "grid"))
    assert gradcheck(lambda x: spatial.AvgPool2d(k, stride, padding)(x), leaf(shape, seed))


@checks
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 3), w=st.integers(2, 3), seed=seeds)
def test_batchnorm2d_train_and_eval(n, c, h, w, seed):
    spatial = pytest.importorskip("tinytorch.spatial")
    bn = spatial.BatchNorm2d(c)
    rng = np.random.default_rng(seed)
    bn.weight.data[:] = rng.uniform(0.5, 2, c); bn.bias.data[:] = rng.standard_normal(c)
    check_layer(bn, leaf((n, c, h, w), seed))                 # training: through the batch statistics
    bn.eval()
    check_layer(bn, leaf((n, c, h, w), seed + 1))             # eval: running statistics are constants


def test_small_cnn():
    spatial = pytest.importorskip("tinytorch.spatial")
    dense = pytest.importorskip("tinytorch.dense")
    from tinytorch.activations import ReLU
    manual_seed(0)
    net = dense.Sequential(spatial.Conv2d(1, 2, 3, padding=1), spatial.BatchNorm2d(2), ReLU(), spatial.MaxPool2d(2),
                           spatial.Conv2d(2, 2, 3, padding=1), ReLU(), spatial.AvgPool2d(2), spatial.Flatten(),
                           layers.Linear(2, 3))
    check_layer(net, leaf((2, 1, 4, 4), 5))


# --- 07 attention -------------------------------------------------------------------------------------------

@checks
@given(n=st.integers(1, 2), t=st.integers(1, 3), heads=st.sampled_from([1, 2]), mask=st.sampled_from(["none", "causal", "padding"]),
       cross=st.booleans(), seed=seeds)
def test_multihead_attention(n, t, heads, mask, cross, seed):
    att = pytest.importorskip("tinytorch.attention")
    manual_seed(seed % 1000)
    mha = att.MultiHeadAttention(4, heads)
    m = None
    if mask == "causal": m = att.causal_mask(t)
    if mask == "padding": m = att.padding_mask(np.random.default_rng(seed).integers(1, t + 1, n), t)
    mha.astype(np.float64)
    q = leaf((n, t, 4), seed)
    kv = leaf((n, t + 1, 4), seed + 1) if cross and mask != "causal" else None
    if mask == "padding" and kv is not None: m = att.padding_mask(np.random.default_rng(seed).integers(1, t + 2, n), t + 1)
    inputs = (q,) if kv is None else (q, kv)
    assert gradcheck(lambda *a: mha(a[0], a[1] if kv is not None else None, mask=m), *inputs, *mha.parameters())


def test_scaled_dot_product_attention_with_fully_masked_row():
    att = pytest.importorskip("tinytorch.attention")
    mask = np.array([[True, False, True], [False, False, False]])           # the second query sees nothing
    q, k, v = leaf((2, 2, 3), 0), leaf((2, 3, 3), 1), leaf((2, 3, 2), 2)
    assert gradcheck(lambda q, k, v: att.scaled_dot_product_attention(q, k, v, mask=mask)[0], q, k, v)
    drop = layers.Dropout(0.5)
    assert gradcheck(lambda q, k, v: (manual_seed(4), att.scaled_dot_product_attention(q, k, v, dropout=drop))[1][0], q, k, v)


@checks
@given(shape=st.sampled_from([(5,), (2, 4), (2, 3, 4)]), seed=seeds)
def test_layernorm(shape, seed):
    att = pytest.importorskip("tinytorch.attention")
    ln = att.LayerNorm(shape[-1])
    rng = np.random.default_rng(seed)
    ln.weight.data[:] = rng.uniform(0.5, 2, shape[-1]); ln.bias.data[:] = rng.standard_normal(shape[-1])
    check_layer(ln, leaf(shape, seed))
    if len(shape) > 1: check_layer(att.LayerNorm(shape[-2:]), leaf(shape, seed + 1))   # over two trailing dims


def test_embedding_repeated_ids_and_positional_encoding():
    att = pytest.importorskip("tinytorch.attention")
    manual_seed(0)
    emb = att.Embedding(5, 3)
    emb.astype(np.float64)
    ids = np.array([[1, 1, 4], [0, 1, 1]])
    pe = att.PositionalEncoding(3, max_len=8)
    assert gradcheck(lambda w: pe(emb(ids)) * Tensor(np.arange(3.0)), emb.weight)
    emb.weight.grad = None
    emb(ids).sum().backward()
    np.testing.assert_array_equal(emb.weight.grad.numpy()[:, 0], [1, 4, 0, 0, 1])     # id 1 used four times


def test_transformer_block_and_tiny_vit():
    att = pytest.importorskip("tinytorch.attention")
    manual_seed(0)
    check_layer(att.TransformerBlock(4, 2, mlp_ratio=2), leaf((2, 3, 4), 0))
    manual_seed(1)
    check_layer(att.TransformerBlock(4, 2, mlp_ratio=1, dropout=0.2), leaf((1, 3, 4), 1), seed_rng_each_call=5)
    manual_seed(2)
    vit = att.ViT(image_size=4, patch_size=2, in_channels=1, num_classes=2, embed_dim=4, depth=1, num_heads=2, mlp_ratio=1)
    check_layer(vit, leaf((2, 1, 4, 4), 2))


def test_training_step_updates_every_parameter():
    "A real step through the attention model: every parameter receives a finite, non-zero gradient."
    att = pytest.importorskip("tinytorch.attention")
    manual_seed(0)
    vit = att.ViT(image_size=8, patch_size=4, in_channels=1, num_classes=3, embed_dim=8, depth=2, num_heads=2)
    x = Tensor(np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32))
    (vit(x) ** 2).mean().backward()
    for name, p in vit.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and p.grad.dtype == np.float32, name
        assert np.isfinite(p.grad.data).all() and np.abs(p.grad.data).sum() > 0, name
    with no_grad():
        for p in vit.parameters(): p.data -= 0.01 * p.grad.data
