"""Protected tests for module 07 (Attention): scaled dot-product attention with masks, multi-head
attention, LayerNorm, embeddings, sinusoidal positions, the pre-norm transformer block, patch
embedding and a tiny ViT.

Run against the exported package; imports modules 02-07 only (forward passes, no backward).
Every reference is written here in float64 NumPy, one head and one patch at a time, from the
module's own parameter values.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinytorch.tensor import Tensor, manual_seed
from tinytorch.attention import (
    Embedding, LayerNorm, MultiHeadAttention, PatchEmbedding, PositionalEncoding, TransformerBlock, ViT,
    causal_mask, combine_masks, padding_mask, padding_mask_from_tokens, scaled_dot_product_attention,
    sinusoidal_table)

checks = settings(max_examples=25, deadline=None, derandomize=True, database=None)


def rand(shape, seed, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def randomize(module, seed, scale=0.5):
    "Random values in every parameter, so biases and LayerNorm scales matter."
    rng = np.random.default_rng(seed)
    for p in module.parameters(): p.data = (rng.standard_normal(p.shape) * scale).astype(np.float32)
    return module


# --- NumPy references (float64) ---------------------------------------------------------------------

def np_softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_attention(q, k, v, mask=None):
    "softmax(q kᵀ/√d) v, one (batch, query) row at a time; a fully masked row gives zero weights."
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    allowed = np.ones(scores.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask), scores.shape)
    weights = np.zeros_like(scores)
    for idx in np.ndindex(scores.shape[:-1]):
        ok = allowed[idx]
        if ok.any(): weights[idx][ok] = np_softmax(scores[idx][ok])
    output = weights @ v
    return output, weights


def np_linear(x, lin):
    out = np.asarray(x, np.float64) @ lin.weight.data.astype(np.float64).T
    return out if lin.bias is None else out + lin.bias.data


def np_mha(xq, xkv, mha, mask=None):
    "Multi-head attention computed head by head."
    q, k, v = np_linear(xq, mha.q_proj), np_linear(xkv, mha.k_proj), np_linear(xkv, mha.v_proj)
    if mask is not None:
        mask = np.asarray(mask)
        if mask.ndim == 3: mask = mask[:, None]
    d, heads, weights = mha.head_dim, [], []
    for h in range(mha.num_heads):
        sl = slice(h * d, (h + 1) * d)
        m = None if mask is None else (mask[:, min(h, mask.shape[1] - 1)] if mask.ndim == 4 else mask)
        o, w = np_attention(q[..., sl], k[..., sl], v[..., sl], m)
        heads.append(o); weights.append(w)
    return np_linear(np.concatenate(heads, -1), mha.out_proj), np.stack(weights, 1)


def np_layernorm(x, ln, axes=(-1,)):
    x = np.asarray(x, np.float64)
    mu, var = x.mean(axes, keepdims=True), x.var(axes, keepdims=True)
    return (x - mu) / np.sqrt(var + ln.eps) * ln.weight.data + ln.bias.data


def np_gelu(x): return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def np_block(x, blk, mask=None):
    h = np_layernorm(x, blk.norm1)
    x = x + np_mha(h, h, blk.attn, mask)[0]
    return x + np_linear(np_gelu(np_linear(np_layernorm(x, blk.norm2), blk.fc1)), blk.fc2)


def np_patches(x, ph, pw):
    "Row-major patches, each flattened in (C, ph, pw) order."
    n, c, h, w = x.shape
    rows = []
    for i in range(h // ph):
        for j in range(w // pw):
            rows.append(x[:, :, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw].reshape(n, -1))
    return np.stack(rows, 1)


# --- scaled dot-product attention -------------------------------------------------------------------

@checks
@given(batch=st.lists(st.integers(1, 3), max_size=2), tq=st.integers(1, 5), tk=st.integers(1, 5),
       d=st.integers(1, 6), dv=st.integers(1, 5), seed=st.integers(0, 2**31))
def test_attention_matches_numpy(batch, tq, tk, d, dv, seed):
    b = tuple(batch)
    q, k, v = rand(b + (tq, d), seed), rand(b + (tk, d), seed + 1), rand(b + (tk, dv), seed + 2)
    out, w = scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v))
    ref_out, ref_w = np_attention(q, k, v)
    assert out.shape == b + (tq, dv) and w.shape == b + (tq, tk)
    np.testing.assert_allclose(w.data, ref_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.data, ref_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(w.data.sum(-1), 1.0, rtol=1e-5)


def test_attention_by_hand():
    o, w = scaled_dot_product_attention(Tensor([[1.0, 0.0]]), Tensor([[1.0, 0.0], [0.0, 1.0]]),
                                        Tensor([[10.0, 0.0], [0.0, 10.0]]))
    p = 1 / (1 + math.exp(-1 / math.sqrt(2)))          # scores 1/√2 and 0
    np.testing.assert_allclose(w.data, [[p, 1 - p]], rtol=1e-6)
    np.testing.assert_allclose(o.data, [[10 * p, 10 * (1 - p)]], rtol=1e-5)


@checks
@given(n=st.integers(1, 3), tq=st.integers(1, 5), tk=st.integers(1, 5), d=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_attention_with_random_masks(n, tq, tk, d, seed):
    q, k, v = rand((n, tq, d), seed), rand((n, tk, d), seed + 1), rand((n, tk, 3), seed + 2)
    mask = np.random.default_rng(seed + 3).random((n, tq, tk)) > 0.4
    mask[..., 0] = True                                  # every query may see something
    out, w = scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), mask=mask)
    ref_out, ref_w = np_attention(q, k, v, mask)
    assert np.all(w.data[~mask] == 0)                    # exactly zero, not just small
    np.testing.assert_allclose(w.data, ref_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.data, ref_out, rtol=1e-4, atol=1e-5)


def test_causal_attention():
    x = rand((1, 4, 8), 0)
    o, w = scaled_dot_product_attention(Tensor(x), Tensor(x), Tensor(x), mask=causal_mask(4))
    np.testing.assert_array_equal(np.triu(w.data[0], 1), 0)
    np.testing.assert_allclose(o.data[0, 0], x[0, 0], rtol=1e-6)      # the first token sees only itself
    np.testing.assert_allclose(o.data, np_attention(x, x, x, np.tril(np.ones((4, 4), bool)))[0], rtol=1e-4, atol=1e-5)


def test_masked_keys_with_huge_scores_get_no_weight_and_fully_masked_rows_stay_finite():
    q, k, v = rand((2, 3, 4), 1), rand((2, 5, 4), 2), rand((2, 5, 6), 3)
    k[0, 0] = 1e4
    mask = np.ones((2, 3, 5), bool)
    mask[:, :, 0] = False
    mask[1, 2, :] = False                                # this query may attend to nothing
    out, w = scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), mask=mask)
    assert np.all(np.isfinite(w.data)) and np.all(np.isfinite(out.data))
    np.testing.assert_array_equal(w.data[..., 0], 0)
    np.testing.assert_array_equal(w.data[1, 2], 0)
    np.testing.assert_allclose(w.data[0].sum(-1), 1.0, rtol=1e-5)


def test_attention_input_errors_name_the_shapes():
    q, k, v = Tensor(rand((2, 3, 4), 0)), Tensor(rand((2, 5, 4), 1)), Tensor(rand((2, 5, 6), 2))
    with pytest.raises(ValueError) as e:
        scaled_dot_product_attention(q, Tensor(rand((2, 5, 3), 1)), v)
    assert "(2, 3, 4)" in str(e.value) and "(2, 5, 3)" in str(e.value)
    with pytest.raises(ValueError, match=r"\(2, 4, 6\)"):
        scaled_dot_product_attention(q, k, Tensor(rand((2, 4, 6), 2)))
    with pytest.raises(ValueError, match=r"\(2, 3, 5\)"):
        scaled_dot_product_attention(q, k, v, mask=np.ones((3, 4), bool))
    with pytest.raises(TypeError):
        scaled_dot_product_attention(q, k, v, mask=np.ones((3, 5)))
    with pytest.raises(ValueError):
        scaled_dot_product_attention(Tensor([1.0, 2.0]), k, v)


def test_mask_helpers():
    np.testing.assert_array_equal(causal_mask(3).data, np.tril(np.ones((3, 3), bool)))
    np.testing.assert_array_equal(padding_mask([2, 0, 3], 3).data[:, 0], [[1, 1, 0], [0, 0, 0], [1, 1, 1]])
    assert padding_mask(np.array([1]), 2).shape == (1, 1, 2)
    ids = np.array([[5, 7, 0, 0], [3, 0, 0, 0]])
    np.testing.assert_array_equal(padding_mask_from_tokens(ids).data, padding_mask([2, 1], 4).data)
    both = combine_masks(causal_mask(4), padding_mask([2, 4], 4))
    np.testing.assert_array_equal(both.data, np.tril(np.ones((4, 4), bool)) & padding_mask([2, 4], 4).data)
    with pytest.raises(ValueError):
        causal_mask(0)
    with pytest.raises(ValueError):
        padding_mask([1, 5], 4)


# --- multi-head attention ---------------------------------------------------------------------------

@pytest.mark.parametrize("embed, heads", [(8, 2), (6, 3), (4, 1), (8, 8)])
def test_multi_head_self_attention_matches_head_by_head_numpy(embed, heads):
    manual_seed(0)
    mha = randomize(MultiHeadAttention(embed, heads), 1)
    x = rand((3, 5, embed), 2)
    out, w = mha(Tensor(x), need_weights=True)
    ref_out, ref_w = np_mha(x, x, mha)
    assert out.shape == (3, 5, embed) and w.shape == (3, heads, 5, 5)
    np.testing.assert_allclose(out.data, ref_out, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(w.data, ref_w, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(mha(Tensor(x)).data, ref_out, rtol=1e-4, atol=1e-5)


def test_multi_head_cross_attention_with_masks():
    manual_seed(0)
    mha = randomize(MultiHeadAttention(8, 2), 3)
    x, mem = rand((3, 5, 8), 4), rand((3, 7, 8), 5)
    np.testing.assert_allclose(mha(Tensor(x), Tensor(mem)).data, np_mha(x, mem, mha)[0], rtol=1e-4, atol=1e-5)
    pm = padding_mask([7, 4, 2], 7)
    out, w = mha(Tensor(x), Tensor(mem), mask=pm, need_weights=True)
    np.testing.assert_allclose(out.data, np_mha(x, mem, mha, pm.data)[0], rtol=1e-4, atol=1e-5)
    assert np.all(w.data[1, :, :, 4:] == 0) and np.all(w.data[2, :, :, 2:] == 0)
    cm = causal_mask(5)
    np.testing.assert_allclose(mha(Tensor(x), mask=cm).data, np_mha(x, x, mha, cm.data)[0], rtol=1e-4, atol=1e-5)
    m3 = np.random.default_rng(6).random((3, 5, 5)) > 0.3
    m3[..., 0] = True
    np.testing.assert_allclose(mha(Tensor(x), mask=m3).data, np_mha(x, x, mha, m3)[0], rtol=1e-4, atol=1e-5)


def test_multi_head_attention_heads_are_independent():
    "Changing the value projection's rows of head 1 leaves head 0's part of the merged output unchanged."
    manual_seed(0)
    mha = randomize(MultiHeadAttention(8, 2), 7)
    mha.out_proj.weight.data = np.eye(8, dtype=np.float32)
    mha.out_proj.bias.data = np.zeros(8, np.float32)
    x = rand((2, 4, 8), 8)
    before = mha(Tensor(x)).data.copy()
    mha.v_proj.weight.data[4:] += 1.0
    after = mha(Tensor(x)).data
    np.testing.assert_allclose(after[..., :4], before[..., :4], rtol=1e-6, atol=1e-6)
    assert not np.allclose(after[..., 4:], before[..., 4:])


def test_multi_head_attention_parameters_and_errors():
    mha = MultiHeadAttention(8, 2)
    assert len(list(mha.parameters())) == 8
    assert sum(p.size for p in mha.parameters()) == 4 * (8 * 8 + 8)
    with pytest.raises(ValueError):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match=r"\(2, 5, 6\)"):
        mha(Tensor(np.ones((2, 5, 6), np.float32)))
    with pytest.raises(ValueError, match=r"\(5, 8\)"):
        mha(Tensor(np.ones((5, 8), np.float32)))
    with pytest.raises(ValueError):
        mha(Tensor(np.ones((3, 5, 8), np.float32)), Tensor(np.ones((2, 5, 8), np.float32)))


# --- LayerNorm --------------------------------------------------------------------------------------

@checks
@given(lead=st.lists(st.integers(1, 3), max_size=2), feat=st.integers(2, 6), seed=st.integers(0, 2**31))
def test_layernorm_matches_numpy(lead, feat, seed):
    ln = randomize(LayerNorm(feat), seed)
    x = rand(tuple(lead) + (feat,), seed + 1) * 5 + 2
    np.testing.assert_allclose(ln(Tensor(x)).data, np_layernorm(x, ln), rtol=1e-4, atol=1e-4)


def test_layernorm_normalises_each_row():
    ln = LayerNorm(6)
    x = rand((4, 3, 6), 0) * 5 + 2
    y = ln(Tensor(x)).data
    np.testing.assert_allclose(y.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(y.var(-1), 1, atol=1e-3)
    np.testing.assert_array_equal(LayerNorm(4)(Tensor(np.full((2, 4), 3.0, np.float32))).data, 0)   # eps: no NaN


def test_layernorm_over_two_trailing_dims():
    ln = randomize(LayerNorm((3, 6)), 2)
    x = rand((4, 3, 6), 3) * 2
    np.testing.assert_allclose(ln(Tensor(x)).data, np_layernorm(x, ln, axes=(-2, -1)), rtol=1e-4, atol=1e-4)


def test_layernorm_errors():
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        LayerNorm(6)(Tensor(np.ones((2, 5), np.float32)))
    with pytest.raises(ValueError):
        LayerNorm(0)


# --- embeddings and positions -----------------------------------------------------------------------

def test_embedding_looks_up_rows():
    manual_seed(0)
    emb = Embedding(10, 4)
    ids = np.array([[1, 2, 2], [9, 0, 1]])
    np.testing.assert_array_equal(emb(ids).data, emb.weight.data[ids])
    assert emb(Tensor(ids, dtype=np.int64)).shape == (2, 3, 4)
    with pytest.raises(IndexError, match="10"):
        emb([[1, 10]])
    with pytest.raises(TypeError):
        emb(Tensor([1.0, 2.0]))


@pytest.mark.parametrize("max_len, dim", [(50, 6), (7, 5), (3, 1), (20, 16)])
def test_sinusoidal_table_by_the_formula(max_len, dim):
    tbl = sinusoidal_table(max_len, dim)
    assert tbl.shape == (max_len, dim) and tbl.dtype == np.float32
    want = np.zeros((max_len, dim))
    for pos in range(max_len):
        for i in range(dim):
            angle = pos / 10000 ** ((i - i % 2) / dim)
            want[pos, i] = math.sin(angle) if i % 2 == 0 else math.cos(angle)
    np.testing.assert_allclose(tbl, want, atol=1e-6)


def test_positional_encoding_adds_the_table():
    pe = PositionalEncoding(6, max_len=50)
    x = rand((2, 7, 6), 0)
    np.testing.assert_allclose(pe(Tensor(x)).data, x + sinusoidal_table(50, 6)[:7], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(pe(Tensor(x[0])).data, x[0] + sinusoidal_table(50, 6)[:7], rtol=1e-6, atol=1e-6)
    assert list(pe.parameters()) == []
    with pytest.raises(ValueError, match="51"):
        pe(Tensor(np.zeros((1, 51, 6), np.float32)))


# --- transformer block ------------------------------------------------------------------------------

def test_transformer_block_matches_numpy():
    manual_seed(1)
    blk = randomize(TransformerBlock(8, num_heads=2), 2)
    x = rand((2, 5, 8), 3)
    out = blk(Tensor(x))
    assert out.shape == (2, 5, 8)
    np.testing.assert_allclose(out.data, np_block(x, blk), rtol=1e-4, atol=1e-4)
    pm = padding_mask([5, 3], 5)
    np.testing.assert_allclose(blk(Tensor(x), mask=pm).data, np_block(x, blk, pm.data), rtol=1e-4, atol=1e-4)
    cm = causal_mask(5)
    np.testing.assert_allclose(blk(Tensor(x), mask=cm).data, np_block(x, blk, cm.data), rtol=1e-4, atol=1e-4)
    # 2 LayerNorms + 4 attention Linears + the 8 → 32 → 8 MLP
    assert sum(p.size for p in blk.parameters()) == 2 * 16 + 4 * 72 + (8 * 32 + 32) + (32 * 8 + 8)


# --- patches and ViT --------------------------------------------------------------------------------

@pytest.mark.parametrize("image, patch, channels", [((8, 8), (4, 4), 3), ((6, 4), (3, 2), 2), ((4, 4), (1, 1), 1)])
def test_patchify_cuts_row_major_patches(image, patch, channels):
    pe = PatchEmbedding(image, patch, channels, embed_dim=5)
    x = rand((2, channels) + image, 0)
    got = pe.patchify(Tensor(x))
    want = np_patches(x, *patch)
    assert got.shape == want.shape == (2, pe.num_patches, channels * patch[0] * patch[1])
    np.testing.assert_array_equal(got.data, want)
    np.testing.assert_allclose(pe(Tensor(x)).data, np_linear(want, pe.proj), rtol=1e-5, atol=1e-5)


def test_patch_embedding_errors():
    with pytest.raises(ValueError):
        PatchEmbedding(8, 3, 1, 4)
    with pytest.raises(ValueError, match=r"\(2, 3, 8, 8\)"):
        PatchEmbedding(8, 4, 1, 4)(Tensor(np.zeros((2, 3, 8, 8), np.float32)))


def np_vit(vit, x):
    tokens = np_linear(np_patches(x, *vit.patch_embed.patch_size), vit.patch_embed.proj)
    if vit.pool == "cls":
        cls = np.broadcast_to(vit.cls_token.data, (x.shape[0], 1, vit.embed_dim))
        tokens = np.concatenate([cls, tokens], 1)
    h = tokens + vit.pos_embed.data
    for blk in vit.blocks: h = np_block(h, blk)
    h = np_layernorm(h, vit.norm)
    feats = h[:, 0] if vit.pool == "cls" else h.mean(1)
    return feats, np_linear(feats, vit.head)


@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_vit_matches_numpy(pool):
    manual_seed(0)
    vit = randomize(ViT(image_size=8, patch_size=4, in_channels=2, num_classes=3, embed_dim=8, depth=2,
                        num_heads=2, pool=pool), 4, scale=0.3)
    x = rand((2, 2, 8, 8), 5)
    feats, logits = np_vit(vit, x)
    np.testing.assert_allclose(vit.features(Tensor(x)).data, feats, rtol=1e-3, atol=1e-4)
    out = vit(Tensor(x))
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out.data, logits, rtol=1e-3, atol=1e-4)
    assert vit.pos_embed.shape == (1, 4 + (pool == "cls"), 8)


def test_vit_rejects_bad_settings():
    with pytest.raises(ValueError):
        ViT(pool="max")
    with pytest.raises(ValueError):
        ViT(depth=0)
