"""Issue 11, defect 7 and the unclear errors of module 07: key padding has its own argument, ambiguous
2-D masks are refused, and errors name the argument. Checked against a float64 NumPy reference.

The defect tests failed on the code before the fix (run against a copy of the package from before).
"""
import numpy as np
import pytest

from tinytorch.tensor import Tensor, manual_seed
from tinytorch.attention import MultiHeadAttention, TransformerBlock, PatchEmbedding, ViT, causal_mask, \
    scaled_dot_product_attention


def np_mha(x, mha, allowed):
    "Multi-head self-attention in float64 NumPy; `allowed` broadcasts to (N, Tq, Tk), True = may attend."
    lin = lambda t, l: t @ l.weight.numpy().astype(np.float64).T + l.bias.numpy()
    q, k, v = lin(x, mha.q_proj), lin(x, mha.k_proj), lin(x, mha.v_proj)
    d, heads = mha.head_dim, []
    for h in range(mha.num_heads):
        s = slice(h * d, (h + 1) * d)
        scores = q[..., s] @ np.swapaxes(k[..., s], -1, -2) / np.sqrt(d)
        scores = np.where(allowed, scores, -np.inf)
        w = np.exp(scores - scores.max(-1, keepdims=True)); w /= w.sum(-1, keepdims=True)
        heads.append(w @ v[..., s])
    return lin(np.concatenate(heads, -1), mha.out_proj)


@pytest.fixture
def setup():
    manual_seed(0)
    mha = MultiHeadAttention(8, 2)
    x = np.random.default_rng(0).standard_normal((4, 4, 8)).astype(np.float32)   # N == T == 4
    pad = np.arange(4)[None, :] >= np.array([4, 2, 3, 1])[:, None]               # (N, Tk), True = padding
    return mha, x, pad


def test_key_padding_mask_hides_the_padded_keys_of_each_sequence(setup):
    mha, x, pad = setup
    out = mha(Tensor(x), key_padding_mask=pad).numpy()
    np.testing.assert_allclose(out, np_mha(x, mha, ~pad[:, None, :]), atol=1e-5)
    # padding a sequence changes nothing for its real tokens: compare sequence 1 (length 2) alone, unpadded
    alone = mha(Tensor(x[1:2, :2])).numpy()
    np.testing.assert_allclose(out[1, :2], alone[0], atol=1e-5)


def test_nt_mask_with_n_equal_t_is_not_silently_misread(setup):
    mha, x, pad = setup
    with pytest.raises(ValueError, match="ambiguous"):       # used to be read as a (Tq, Tk) mask: wrong output
        mha(Tensor(x), mask=~pad)


def test_nt_mask_with_n_not_t_points_to_key_padding_mask(setup):
    mha, x, pad = setup
    with pytest.raises(ValueError, match="key_padding_mask="):
        mha(Tensor(x[:3]), mask=np.ones((3, 4), bool) & (np.arange(4) < 2))


def test_unambiguous_square_masks_still_work(setup):           # regression guard: causal masks, equal rows
    mha, x, pad = setup
    cm = causal_mask(4).numpy()
    np.testing.assert_allclose(mha(Tensor(x), mask=cm).numpy(), np_mha(x, mha, cm), atol=1e-5)
    np.testing.assert_allclose(mha(Tensor(x), mask=cm, key_padding_mask=pad).numpy(),
                               np_mha(x, mha, cm & ~pad[:, None, :]), atol=1e-5)
    explicit = (~pad)[None]
    np.testing.assert_allclose(mha(Tensor(x), mask=explicit).numpy(), np_mha(x, mha, explicit), atol=1e-5)


def test_key_padding_mask_errors_name_the_argument(setup):
    mha, x, pad = setup
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(N, Tk\) = \(4, 4\)"):
        mha(Tensor(x), key_padding_mask=pad[:2])
    with pytest.raises(TypeError, match="key_padding_mask must be boolean"):
        mha(Tensor(x), key_padding_mask=pad.astype(np.float32))
    with pytest.raises(ValueError, match="every key of sequence 0"):     # the True = real token convention, caught
        mha(Tensor(x), key_padding_mask=~pad)


def test_transformer_block_passes_key_padding_mask(setup):
    _, x, pad = setup
    manual_seed(0)
    blk = TransformerBlock(8, 2)
    a = blk(Tensor(x), key_padding_mask=pad).numpy()
    b = blk(Tensor(x), mask=Tensor(~pad[:, None, :])).numpy()
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_errors_name_the_argument_and_the_layer():
    with pytest.raises(ValueError, match="PatchEmbedding: in_channels must be a positive int, got 0"):   # blamed Linear
        PatchEmbedding(8, 4, 0, 16)
    with pytest.raises(ValueError, match="PatchEmbedding: embed_dim"):
        PatchEmbedding(8, 4, 3, -1)
    with pytest.raises(ValueError, match="ViT: num_classes"):
        ViT(image_size=8, patch_size=4, num_classes=0)
    with pytest.raises(ValueError, match="TransformerBlock: mlp_ratio"):
        TransformerBlock(8, 2, mlp_ratio=float('nan'))
    q = Tensor(np.zeros((2, 3, 4), np.float32)); k = Tensor(np.zeros((5, 3, 4), np.float32))
    with pytest.raises(ValueError, match="q and k must have the same batch dimensions"):   # named neither before
        scaled_dot_product_attention(q, k, k)
