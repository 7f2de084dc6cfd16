"""Neural Architecture capability: "Can design and construct any neural network architecture".

Builds five models from the public API of modules 03-07 (activations, layers, dense, spatial,
attention): an MLP classifier, a LeNet-style CNN for 1x28x28, a 32x32x3 CNN with BatchNorm, a
2-block transformer encoder classifier over token sequences, and a tiny ViT over 32x32x3 images.
For each model it checks

- the output shape (and the shape of a single-example batch);
- the parameter count, against arithmetic written out by hand below;
- that `state_dict` round-trips exactly: a freshly built model (different random init) that loads
  it gives bit-identical outputs and an identical state dict;
- that the forward pass matches an independent NumPy forward (float64) that reads the weights
  from `state_dict` only. The CNN reference convolves with a loop over kernel offsets and einsum,
  not with TinyTorch's im2col.

All parameters (and BatchNorm's running statistics) are set to random values first, so biases,
norm scales and running statistics all matter in the comparison. Models run in eval mode.
`tito milestone test architecture` runs this file.
"""
import math
import numpy as np
import pytest

from tinytorch.tensor import Tensor, manual_seed
from tinytorch.activations import ReLU
from tinytorch.layers import Module, ModuleList, Linear
from tinytorch.dense import MLP, Sequential, count_parameters
from tinytorch.spatial import AvgPool2d, BatchNorm2d, Conv2d, Flatten, MaxPool2d
from tinytorch.attention import (Embedding, PositionalEncoding, TransformerBlock, ViT,
                                 padding_mask_from_tokens)

RNG = np.random.default_rng(2024)
TOL = dict(rtol=1e-4, atol=1e-4)     # float32 model vs float64 reference


# ----------------------------------------------------------------------------------------------
# Independent NumPy reference pieces (float64). Each takes the state dict `sd` and a key prefix.
# ----------------------------------------------------------------------------------------------
def np_linear(x, sd, name):
    return x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

def np_relu(x): return np.maximum(x, 0.0)

def np_gelu(x): return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))

def np_softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)

def np_layernorm(x, sd, name, eps=1e-5):
    y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps)
    return y * sd[f"{name}.weight"] + sd[f"{name}.bias"]

def np_attention(q, k, v, keep=None):
    "softmax(q kᵀ/√d) v; `keep` (bool, broadcastable to the scores) marks keys a query may use."
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if keep is None: return np_softmax(s) @ v
    s = np.where(keep, s, -np.inf)
    e = np.where(keep, np.exp(s - s.max(-1, keepdims=True)), 0.0)
    return e / e.sum(-1, keepdims=True) @ v

def np_mha(x, sd, name, num_heads, keep=None):
    "Multi-head self-attention, one head at a time."
    q, k, v = (np_linear(x, sd, f"{name}.{p}_proj") for p in "qkv")
    d = x.shape[-1] // num_heads
    heads = [np_attention(q[..., h * d:(h + 1) * d], k[..., h * d:(h + 1) * d], v[..., h * d:(h + 1) * d], keep)
             for h in range(num_heads)]
    return np_linear(np.concatenate(heads, -1), sd, f"{name}.out_proj")

def np_block(x, sd, name, num_heads, keep=None):
    "Pre-norm transformer block: x + MHA(LN(x)), then x + MLP(LN(x)) with GELU."
    x = x + np_mha(np_layernorm(x, sd, f"{name}.norm1"), sd, f"{name}.attn", num_heads, keep)
    h = np_gelu(np_linear(np_layernorm(x, sd, f"{name}.norm2"), sd, f"{name}.fc1"))
    return x + np_linear(h, sd, f"{name}.fc2")

def np_conv2d(x, sd, name, stride=1, padding=0):
    "Cross-correlation by a loop over the kernel offsets: each offset adds one strided slice × weights."
    w, b = sd[f"{name}.weight"], sd[f"{name}.bias"]
    F, C, KH, KW = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    OH, OW = (xp.shape[2] - KH) // stride + 1, (xp.shape[3] - KW) // stride + 1
    out = np.zeros((x.shape[0], F, OH, OW))
    for i in range(KH):
        for j in range(KW):
            window = xp[:, :, i:i + stride * (OH - 1) + 1:stride, j:j + stride * (OW - 1) + 1:stride]
            out += np.einsum("nchw,fc->nfhw", window, w[:, :, i, j])
    return out + b[None, :, None, None]

def np_maxpool2(x):
    "2x2 max pooling, stride 2, by splitting each spatial axis in two."
    N, C, H, W = x.shape
    return x[:, :, :H // 2 * 2, :W // 2 * 2].reshape(N, C, H // 2, 2, W // 2, 2).max(axis=(3, 5))

def np_batchnorm_eval(x, sd, name, eps=1e-5):
    "Normalise each channel with the running statistics, then scale and shift."
    c = lambda key: sd[f"{name}.{key}"][None, :, None, None]
    return (x - c("running_mean")) / np.sqrt(c("running_var") + eps) * c("weight") + c("bias")

def np_sinusoids(T, D):
    "PE[p, 2i] = sin(p / 10000^(2i/D)), PE[p, 2i+1] = cos(same), straight from the formula."
    pe = np.zeros((T, D))
    for p in range(T):
        for j in range(D):
            angle = p / 10000 ** ((j - j % 2) / D)
            pe[p, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return pe


# ----------------------------------------------------------------------------------------------
# Shared checks
# ----------------------------------------------------------------------------------------------
def randomize(model: Module, seed: int) -> Module:
    "Load random values into every parameter and buffer through the public state-dict API."
    rng = np.random.default_rng(seed)
    new = {}
    for key, value in model.state_dict().items():
        if value.dtype.kind != 'f': new[key] = value                        # e.g. a step counter
        elif key.endswith("running_var"): new[key] = rng.uniform(0.5, 2.0, value.shape)
        else: new[key] = rng.normal(0.0, 0.3, value.shape)
    model.load_state_dict(new)
    return model

def as_f64(sd): return {k: v.astype(np.float64) if v.dtype.kind == 'f' else v for k, v in sd.items()}

def check_model(build, x, expected_params: int, out_shape: tuple, reference, seed: int):
    "Output shape, parameter count, exact state-dict round trip, and the NumPy reference."
    manual_seed(seed)
    model = randomize(build(), seed).eval()
    assert count_parameters(model) == expected_params
    assert sum(p.size for p in model.parameters()) == expected_params
    out = model(x)
    assert isinstance(out, Tensor) and out.shape == out_shape, f"output shape {out.shape}, expected {out_shape}"
    assert out.dtype == np.float32
    assert np.isfinite(out.numpy()).all()
    one = model(x[:1])
    assert one.shape == (1,) + out_shape[1:]
    np.testing.assert_allclose(one.numpy(), out.numpy()[:1], rtol=1e-5, atol=1e-5)   # a batch of one works alike

    sd = model.state_dict()
    manual_seed(seed + 1)
    fresh = build().eval()
    assert not np.array_equal(fresh(x).numpy(), out.numpy())       # a different init really differs ...
    fresh.load_state_dict(sd)
    np.testing.assert_array_equal(fresh(x).numpy(), out.numpy())    # ... until it loads the state dict
    sd2 = fresh.state_dict()
    assert list(sd2) == list(sd)
    for key in sd: np.testing.assert_array_equal(sd2[key], sd[key], err_msg=key)

    np.testing.assert_allclose(out.numpy(), reference(x.numpy().astype(np.float64), as_f64(sd)), **TOL)
    return model, sd


# ----------------------------------------------------------------------------------------------
# 1. MLP classifier on flattened 28x28 images
# ----------------------------------------------------------------------------------------------
def test_mlp_classifier():
    build = lambda: MLP(784, [128, 64], 10)
    # 784·128 + 128  +  128·64 + 64  +  64·10 + 10
    params = (784 * 128 + 128) + (128 * 64 + 64) + (64 * 10 + 10)
    assert params == 109_386

    def reference(x, sd):
        h = np_relu(np_linear(x, sd, "0"))
        h = np_relu(np_linear(h, sd, "2"))
        return np_linear(h, sd, "4")

    x = Tensor(RNG.standard_normal((4, 784)).astype(np.float32))
    _, sd = check_model(build, x, params, (4, 10), reference, seed=1)
    assert list(sd) == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert sd["0.weight"].shape == (128, 784)


# ----------------------------------------------------------------------------------------------
# 2. LeNet-style CNN for 1x28x28
# ----------------------------------------------------------------------------------------------
def lenet():
    return Sequential(Conv2d(1, 6, 5, padding=2), ReLU(), MaxPool2d(2),     # (6, 28, 28) → (6, 14, 14)
                      Conv2d(6, 16, 5), ReLU(), MaxPool2d(2),               # (16, 10, 10) → (16, 5, 5)
                      Flatten(),                                            # 400
                      Linear(400, 120), ReLU(), Linear(120, 84), ReLU(), Linear(84, 10))

def lenet_reference(x, sd):
    h = np_maxpool2(np_relu(np_conv2d(x, sd, "0", padding=2)))
    h = np_maxpool2(np_relu(np_conv2d(h, sd, "3")))
    h = h.reshape(h.shape[0], -1)                                          # (N, 16·5·5), channel-major
    h = np_relu(np_linear(h, sd, "7"))
    h = np_relu(np_linear(h, sd, "9"))
    return np_linear(h, sd, "11")

def test_lenet_cnn():
    # conv1 6·(1·5·5) + 6; conv2 16·(6·5·5) + 16; fc 400·120 + 120, 120·84 + 84, 84·10 + 10
    params = (6 * 1 * 5 * 5 + 6) + (16 * 6 * 5 * 5 + 16) + (400 * 120 + 120) + (120 * 84 + 84) + (84 * 10 + 10)
    assert params == 156 + 2416 + 48_120 + 10_164 + 850 == 61_706        # the classic LeNet-5 count
    x = Tensor(RNG.standard_normal((3, 1, 28, 28)).astype(np.float32))
    model, sd = check_model(lenet, x, params, (3, 10), lenet_reference, seed=2)
    assert [k for k in sd if k.endswith("weight")] == ["0.weight", "3.weight", "7.weight", "9.weight", "11.weight"]
    assert sd["3.weight"].shape == (16, 6, 5, 5)
    with pytest.raises(ValueError, match=r"1 channels.*got shape \(2, 3, 28, 28\)"):
        model(Tensor(np.zeros((2, 3, 28, 28), np.float32)))


# ----------------------------------------------------------------------------------------------
# 3. 32x32x3 CNN with BatchNorm
# ----------------------------------------------------------------------------------------------
def bn_cnn():
    return Sequential(Conv2d(3, 16, 3, padding=1), BatchNorm2d(16), ReLU(), MaxPool2d(2),   # (16, 16, 16)
                      Conv2d(16, 32, 3, padding=1), BatchNorm2d(32), ReLU(), MaxPool2d(2),  # (32, 8, 8)
                      Conv2d(32, 64, 3, stride=2, padding=1), BatchNorm2d(64), ReLU(),     # (64, 4, 4)
                      AvgPool2d(4), Flatten(), Linear(64, 10))                              # 64 → 10

def bn_cnn_reference(x, sd):
    h = np_maxpool2(np_relu(np_batchnorm_eval(np_conv2d(x, sd, "0", padding=1), sd, "1")))
    h = np_maxpool2(np_relu(np_batchnorm_eval(np_conv2d(h, sd, "4", padding=1), sd, "5")))
    h = np_relu(np_batchnorm_eval(np_conv2d(h, sd, "8", stride=2, padding=1), sd, "9"))
    return np_linear(h.mean(axis=(2, 3)), sd, "13")                       # 4x4 average pool, flatten

def test_batchnorm_cnn():
    # convs F·(C·3·3) + F; each BatchNorm has γ and β per channel (its running statistics are
    # buffers: in the state dict, not parameters); head 64·10 + 10
    params = ((16 * 3 * 9 + 16) + 2 * 16 + (32 * 16 * 9 + 32) + 2 * 32 + (64 * 32 * 9 + 64) + 2 * 64
              + (64 * 10 + 10))
    assert params == 448 + 32 + 4640 + 64 + 18_496 + 128 + 650 == 24_458
    x = Tensor(RNG.standard_normal((2, 3, 32, 32)).astype(np.float32))
    model, sd = check_model(bn_cnn, x, params, (2, 10), bn_cnn_reference, seed=3)
    assert "1.running_mean" in sd and "9.running_var" in sd and sd["5.running_var"].shape == (32,)
    state_size = sum(v.size for v in sd.values())
    assert state_size == params + 2 * (16 + 32 + 64)                       # + running mean and var

    # one training-mode pass moves the running statistics; eval mode then uses the new ones
    model.train()
    model(Tensor(RNG.standard_normal((8, 3, 32, 32)).astype(np.float32) * 2 + 1))
    model.eval()
    sd_after = model.state_dict()
    assert not np.allclose(sd_after["1.running_mean"], sd["1.running_mean"])
    np.testing.assert_array_equal(sd_after["0.weight"], sd["0.weight"])   # parameters untouched
    np.testing.assert_allclose(model(x).numpy(), bn_cnn_reference(x.numpy().astype(np.float64), as_f64(sd_after)), **TOL)


# ----------------------------------------------------------------------------------------------
# 4. Transformer encoder classifier over token sequences
# ----------------------------------------------------------------------------------------------
PAD = 0

class TextClassifier(Module):
    "Embedding + sinusoidal positions + 2 pre-norm blocks + masked mean pooling + Linear."
    def __init__(self, vocab_size=50, embed_dim=32, num_heads=4, max_len=16, num_classes=3, depth=2):
        self.embed = Embedding(vocab_size, embed_dim)
        self.pos = PositionalEncoding(embed_dim, max_len)
        self.blocks = ModuleList(TransformerBlock(embed_dim, num_heads) for _ in range(depth))
        self.head = Linear(embed_dim, num_classes)

    def forward(self, ids):
        mask = padding_mask_from_tokens(ids, PAD)                   # (N, 1, T): padding is never attended to
        h = self.pos(self.embed(ids))
        for block in self.blocks: h = block(h, mask=mask)
        keep = Tensor(mask.numpy()[:, 0, :, None].astype(np.float32))   # (N, T, 1)
        return self.head((h * keep).sum(axis=1) / keep.sum(axis=1))    # mean over real tokens only

def text_reference(ids, sd, num_heads=4, depth=2):
    ids = ids.astype(np.int64)
    real = ids != PAD                                                 # (N, T)
    h = sd["embed.weight"][ids] + np_sinusoids(ids.shape[1], sd["embed.weight"].shape[1])
    for b in range(depth): h = np_block(h, sd, f"blocks.{b}", num_heads, keep=real[:, None, :])
    pooled = (h * real[..., None]).sum(1) / real.sum(1, keepdims=True)
    return np_linear(pooled, sd, "head")

def test_transformer_text_classifier():
    V, E, H, C, T = 50, 32, 4, 3, 12
    # embedding V·E; positional encoding has no parameters; per block: 2 LayerNorms (2·2E),
    # attention 4·(E·E + E), MLP (E·4E + 4E) + (4E·E + E); head E·C + C
    per_block = 2 * (2 * E) + 4 * (E * E + E) + (E * 4 * E + 4 * E) + (4 * E * E + E)
    assert per_block == 12_704
    params = V * E + 2 * per_block + (E * C + C)
    assert params == 27_107

    ids = RNG.integers(1, V, size=(3, T))
    ids[1, 7:] = PAD                                  # sequence 1 has 7 real tokens
    ids[2, 3:] = PAD                                  # sequence 2 has 3
    x = Tensor(ids)
    model, sd = check_model(TextClassifier, x, params, (3, C), text_reference, seed=4)
    assert sd["blocks.1.attn.q_proj.weight"].shape == (E, E) and sd["blocks.0.fc1.weight"].shape == (4 * E, E)

    # padding changes nothing: the same sentences padded to a longer length give the same logits
    longer = np.concatenate([ids, np.full((3, 4), PAD)], axis=1)
    np.testing.assert_allclose(model(Tensor(longer)).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    with pytest.raises(IndexError, match=r"\[0, 50\)"): model(Tensor(np.array([[1, 50]])))
    with pytest.raises(ValueError, match="longer than max_len=16"): model(Tensor(RNG.integers(1, V, size=(1, 17))))


# ----------------------------------------------------------------------------------------------
# 5. Tiny ViT over 32x32x3 images
# ----------------------------------------------------------------------------------------------
def vit_reference(img, sd, patch=8, num_heads=4, depth=2):
    N, C, Hh, Ww = img.shape
    g = Hh // patch
    # cut patches with explicit slicing, row by row; each flattened channel-first like a conv kernel
    patches = np.stack([img[:, :, r * patch:(r + 1) * patch, c * patch:(c + 1) * patch].reshape(N, -1)
                        for r in range(g) for c in range(g)], axis=1)
    tokens = np_linear(patches, sd, "patch_embed.proj")
    cls = np.broadcast_to(sd["cls_token"], (N, 1, tokens.shape[-1]))
    h = np.concatenate([cls, tokens], axis=1) + sd["pos_embed"]
    for b in range(depth): h = np_block(h, sd, f"blocks.{b}", num_heads)
    return np_linear(np_layernorm(h, sd, "norm")[:, 0], sd, "head")

def test_tiny_vit():
    P, C_in, E, K = 8, 3, 32, 10
    build = lambda: ViT(image_size=32, patch_size=P, in_channels=C_in, num_classes=K, embed_dim=E, depth=2, num_heads=4)
    n_patches = (32 // P) ** 2                        # 16 patches of 8x8
    per_block = 2 * (2 * E) + 4 * (E * E + E) + (E * 4 * E + 4 * E) + (4 * E * E + E)
    # patch projection (C·P·P)·E + E; class token E; positional embedding (patches + 1)·E;
    # 2 blocks; final LayerNorm 2E; head E·K + K
    params = (C_in * P * P * E + E) + E + (n_patches + 1) * E + 2 * per_block + 2 * E + (E * K + K)
    assert params == 6176 + 32 + 544 + 25_408 + 64 + 330 == 32_554

    x = Tensor(RNG.standard_normal((2, 3, 32, 32)).astype(np.float32))
    _, sd = check_model(build, x, params, (2, K), vit_reference, seed=5)
    assert sd["pos_embed"].shape == (1, n_patches + 1, E) and sd["cls_token"].shape == (1, 1, E)
    with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\), got \(2, 1, 32, 32\)"):
        build()(Tensor(np.zeros((2, 1, 32, 32), np.float32)))
