"""Protected tests of module 12 (Compression), run against the exported package.

Every value is checked against an independent reference: a NumPy sort for pruning, the quantization
formulas evaluated in float64, module 06's loop convolution, central differences for the
distillation gradient, a model with the pruned channels masked out for structured pruning.
Imports only modules 01-12; no data files and no training, so it runs in seconds.
"""
import copy
import json
import math

import numpy as np
import pytest

from tinytorch.tensor import Tensor, manual_seed
from tinytorch.activations import ReLU, GELU
from tinytorch.layers import Linear, Dropout, Module
from tinytorch.dense import Sequential, count_parameters
from tinytorch.spatial import Conv2d, BatchNorm2d, MaxPool2d, Flatten, conv2d, conv2d_naive
from tinytorch.autograd import no_grad
from tinytorch.optimizers import SGD, Adam
from tinytorch.training import CrossEntropyLoss, save_checkpoint
from tinytorch.compression import (
    magnitude_prune, sparsity, prunable_weights, keep_pruned, prune_channels, channel_importance,
    affine_qparams, quantize, dequantize, quantize_weights_per_channel, int8_matmul, QTensor,
    QuantizedLinear, QuantizedConv2d, QuantizedModel, fold_batchnorm, quantize_int8,
    distillation_loss, distill, encode_sparse, decode_sparse, save_compressed, load_compressed)


def small_cnn(seed=0):
    "A CNN with random weights and non-trivial batch-norm statistics (no training needed)."
    manual_seed(seed)
    m = Sequential(Conv2d(1, 6, 3, padding=1), BatchNorm2d(6), ReLU(), MaxPool2d(2),
                   Conv2d(6, 8, 3, padding=1), BatchNorm2d(8), ReLU(), MaxPool2d(2),
                   Flatten(), Linear(8 * 2 * 2, 12), ReLU(), Linear(12, 5))
    rng = np.random.default_rng(seed)
    for bn in (m[1], m[5]):
        n = bn.num_features
        bn.weight.data[:] = rng.uniform(0.5, 2.0, n).astype(np.float32)
        bn.bias.data[:] = rng.normal(0, 0.3, n).astype(np.float32)
        bn.running_mean = rng.normal(0, 0.5, n).astype(np.float32)
        bn.running_var = rng.uniform(0.3, 3.0, n).astype(np.float32)
    for lin in (m[9], m[11]): lin.bias.data[:] = rng.normal(0, 0.1, lin.bias.shape).astype(np.float32)
    return m.eval()


def images(n=32, seed=1):
    return np.random.default_rng(seed).random((n, 1, 8, 8)).astype(np.float32)


def logits(model, x):
    with no_grad():
        return model(Tensor(x)).data


# ---------------------------------------------------------------- pruning

def test_global_magnitude_prune_matches_a_sort():
    m = small_cnn()
    before = {n: p.data.copy() for n, p in prunable_weights(m)}
    masks = magnitude_prune(m, 0.6)
    flat = np.concatenate([w.ravel() for w in before.values()])
    k = round(0.6 * flat.size)
    assert sum(int((~mk).sum()) for mk in masks.values()) == k
    threshold = np.sort(np.abs(flat))[k - 1]
    for n, p in prunable_weights(m):
        np.testing.assert_array_equal(p.data, before[n] * masks[n])
        assert (np.abs(before[n][~masks[n]]) <= threshold).all()
        assert (np.abs(before[n][masks[n]]) >= threshold).all()
    assert sparsity(m) == pytest.approx(k / flat.size)


def test_layer_magnitude_prune_prunes_each_layer_alike():
    m = small_cnn()
    masks = magnitude_prune(m, 0.5, scope='layer')
    for n, p in prunable_weights(m):
        assert int((p.data == 0).sum()) == round(0.5 * p.size)
        np.testing.assert_array_equal(masks[n], p.data != 0)


@pytest.mark.parametrize("args, message", [
    ((1.0,), "sparsity must be a number in [0, 1)"),
    ((-0.2,), "got -0.2"),
    (("half",), "got 'half'"),
    ((0.5, "neuron"), "scope must be 'global' or 'layer'"),
])
def test_magnitude_prune_rejects_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message.replace('[', r'\[').replace(')', r'\)').replace('(', r'\(')):
        magnitude_prune(small_cnn(), *args)
    with pytest.raises(TypeError, match="needs a tinytorch Module"):
        magnitude_prune(np.ones(4), 0.5)


def test_keep_pruned_keeps_zeros_through_training():
    m = small_cnn()
    masks = magnitude_prune(m, 0.7)
    opt = keep_pruned(SGD(m.parameters(), lr=0.5), m, masks)
    m.train()
    x, y = Tensor(images(16)), np.arange(16) % 5
    for _ in range(3):
        opt.zero_grad()
        CrossEntropyLoss()(m(x), y).backward()
        assert any((p.grad.data[~masks[n]] != 0).any() for n, p in prunable_weights(m))   # the gradient would revive them
        opt.step()
    for n, p in prunable_weights(m):
        assert (p.data[~masks[n]] == 0).all()
    with pytest.raises(ValueError, match="has shape"):
        keep_pruned(opt, m, {'0.weight': np.ones(2, bool)})


def test_prune_channels_equals_the_masked_original():
    m = small_cnn(3)
    small = prune_channels(m, 0.5)
    convs = [l for l in small.layers if isinstance(l, (Conv2d, Linear))]
    assert [tuple(c.weight.shape) for c in convs] == [(3, 1, 3, 3), (4, 3, 3, 3), (6, 16), (5, 6)]
    assert count_parameters(small) < count_parameters(m) / 2

    def kept(big, small_w):
        rows = big.reshape(len(big), -1)
        return np.array([np.flatnonzero((rows == r).all(1))[0] for r in small_w.reshape(len(small_w), -1)])
    k0 = kept(m[0].weight.data, small[0].weight.data)
    k4 = kept(m[4].weight.data[:, k0], small[4].weight.data)
    k9 = kept(m[9].weight.data[:, (k4[:, None] * 4 + np.arange(4)).ravel()], small[9].weight.data)
    ref = copy.deepcopy(m)
    ref[4].weight.data[:, np.setdiff1d(np.arange(6), k0)] = 0
    ref[9].weight.data.reshape(12, 8, 4)[:, np.setdiff1d(np.arange(8), k4)] = 0
    ref[11].weight.data[:, np.setdiff1d(np.arange(12), k9)] = 0
    x = images()
    np.testing.assert_allclose(logits(small.eval(), x), logits(ref, x), rtol=1e-4, atol=1e-5)
    # the channels kept are the most important ones by |w|_1 · |γ|/σ
    w, bn = m[0].weight.data, m[1]
    score = np.abs(w).reshape(6, -1).sum(1) * np.abs(bn.weight.data) / np.sqrt(bn.running_var + bn.eps)
    np.testing.assert_allclose(channel_importance(m[0], bn), score, rtol=1e-6)
    np.testing.assert_array_equal(k0, np.sort(np.argsort(-score)[:3]))


def test_prune_channels_rejects_what_it_cannot_shrink():
    with pytest.raises(ValueError, match="no Conv2d or Linear feeds another one"):
        prune_channels(Sequential(Linear(3, 2)), 0.5)
    with pytest.raises(TypeError, match="expected a Sequential"):
        prune_channels(Linear(3, 3), 0.5)


# ---------------------------------------------------------------- quantization

def test_affine_qparams_by_hand():
    assert affine_qparams(0.0, 2.55) == (float(np.float32(0.01)), -128)
    s, z = affine_qparams(-1.0, 1.0)
    assert s == pytest.approx(2 / 255) and z == 0
    assert affine_qparams(1.0, 3.0) == affine_qparams(0.0, 3.0)
    assert affine_qparams(-2.0, 0.0)[1] == 127
    with pytest.raises(ValueError, match="lo <= hi"):
        affine_qparams(2.0, 1.0)
    with pytest.raises(ValueError, match="finite"):
        affine_qparams(float('nan'), 1.0)


def test_quantize_round_trip_is_within_half_a_step():
    r = np.random.default_rng(0).uniform(-3, 5, 5000).astype(np.float32)
    s, z = affine_qparams(r.min(), r.max())
    q = quantize(r, s, z)
    assert q.dtype == np.int8
    assert np.abs(dequantize(q, s, z) - r).max() <= s / 2 * 1.0001
    assert dequantize(quantize(np.float32(0.0), s, z), s, z) == 0.0
    np.testing.assert_array_equal(quantize(np.array([-100.0, 100.0]), s, z), [-128, 127])


def test_per_channel_weights_by_hand():
    q, s = quantize_weights_per_channel(np.array([[0.25, -1.0], [3.0, -0.5]], np.float32))
    np.testing.assert_allclose(s, [1 / 127, 3 / 127], rtol=1e-6)
    np.testing.assert_array_equal(q, [[32, -127], [127, -21]])
    w = np.random.default_rng(2).normal(0, 1, (5, 3, 3, 3)).astype(np.float32) * np.arange(1, 6)[:, None, None, None]
    q, s = quantize_weights_per_channel(w)
    assert np.abs(q).max() == 127
    err = np.abs(q * s[:, None, None, None] - w).reshape(5, -1).max(1)
    assert (err <= s / 2 * 1.0001).all()
    with pytest.raises(ValueError, match="ndim >= 2"):
        quantize_weights_per_channel(np.ones(3))


def test_int8_matmul_is_exact():
    rng = np.random.default_rng(0)
    a, b = rng.integers(-128, 128, (9, 700)).astype(np.int8), rng.integers(-128, 128, (700, 4)).astype(np.int8)
    out = int8_matmul(a, b)
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, a.astype(np.int64) @ b.astype(np.int64))
    worst = np.full((1, 3000), -128, np.int8)
    assert int8_matmul(worst, worst.T)[0, 0] == 128 * 128 * 3000
    with pytest.raises(TypeError, match="int8"):
        int8_matmul(a.astype(np.int32), b)
    with pytest.raises(ValueError, match=r"\(M, K\) @ \(K, N\)"):
        int8_matmul(a, a)


def test_quantized_linear_against_float64_formula():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.2, (6, 40)).astype(np.float32)
    b = rng.normal(0, 0.1, 6).astype(np.float32)
    x = rng.uniform(-0.5, 2.0, (10, 40)).astype(np.float32)
    qp_in = affine_qparams(x.min(), x.max())
    wq, ws = quantize_weights_per_channel(w)
    xq = quantize(x, *qp_in)
    acc_scale = qp_in[0] * ws.astype(np.float64)
    ref = ((xq.astype(np.float64) - qp_in[1]) @ wq.T.astype(np.float64) + np.round(b / acc_scale)) * acc_scale
    out = QuantizedLinear(wq, ws, b, qp_in)(QTensor(xq, *qp_in))
    np.testing.assert_allclose(out.data, ref, rtol=1e-5, atol=1e-5)
    assert np.abs(out.data - (x @ w.T + b)).max() < 0.05
    qp_out = affine_qparams(0.0, ref.max())
    q = QuantizedLinear(wq, ws, b, qp_in, qp_out, relu=True)(QTensor(xq, *qp_in))
    expect = np.clip(np.round(ref / qp_out[0]) + qp_out[1], qp_out[1], 127)
    assert isinstance(q, QTensor) and np.abs(q.q.astype(int) - expect).max() <= 1
    assert (q.q >= qp_out[1]).all()                               # fused ReLU
    with pytest.raises(TypeError, match="QTensor"):
        QuantizedLinear(wq, ws, b, qp_in)(Tensor(x))


def test_quantized_conv_pads_with_the_zero_point():
    rng = np.random.default_rng(3)
    x = rng.uniform(0.2, 1.5, (2, 3, 6, 6)).astype(np.float32)       # no zeros: wrong padding would show
    w = rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32)
    qp = affine_qparams(0.0, x.max())
    xq = quantize(x, *qp)
    wq, ws = quantize_weights_per_channel(w)
    for stride, padding in [(1, 1), (2, 1), (1, 0)]:
        conv = QuantizedConv2d(wq, ws, None, qp, None, False, (stride, stride), (padding, padding))
        ref = conv2d_naive(dequantize(xq, *qp).astype(np.float64), (wq * ws[:, None, None, None]).astype(np.float64),
                           None, stride, padding)
        np.testing.assert_allclose(conv(QTensor(xq, *qp)).data, ref, rtol=1e-4, atol=1e-4)


def test_fold_batchnorm_equals_conv_then_bn():
    m = small_cnn(5)
    w, b = fold_batchnorm(m[4].weight.data, m[4].bias.data, m[5])
    x = Tensor(np.random.default_rng(0).normal(size=(2, 6, 4, 4)).astype(np.float32))
    with no_grad():
        np.testing.assert_allclose(conv2d(x, Tensor(w), Tensor(b), 1, 1).data, m[5](m[4](x)).data, rtol=1e-4, atol=1e-5)


def test_quantize_int8_model_tracks_the_float_model():
    m = small_cnn(7)
    x = images(200, seed=4)
    q = quantize_int8(m, [x[i:i + 50] for i in range(0, 200, 50)])
    assert isinstance(q, QuantizedModel)
    out, ref = logits(q, x), logits(m, x)
    assert isinstance(q(Tensor(x[:3])), Tensor) and out.shape == ref.shape == (200, 5)
    assert np.abs(out - ref).max() < 0.05 * np.abs(ref).max()
    assert (out.argmax(1) == ref.argmax(1)).mean() > 0.9
    assert all(not mod.training for mod in m.modules())          # eval mode left as it was


def test_quantize_int8_runs_unknown_layers_in_float():
    manual_seed(0)
    mlp = Sequential(Flatten(), Linear(64, 16), GELU(), Dropout(0.3), Linear(16, 4))
    x = images(100)
    q = quantize_int8(mlp, [(Tensor(x), np.zeros(100, np.int64))])
    mlp.eval()
    ref = logits(mlp, x)
    assert np.abs(logits(q, x) - ref).max() < 0.05 * np.abs(ref).max()
    assert mlp.training is False


@pytest.mark.parametrize("batches, error, message", [
    ([], ValueError, "gave no batches"),
    ([np.ones((2, 1, 8, 8), np.int64)], TypeError, "floating point"),
    ([np.full((2, 1, 8, 8), np.inf, np.float32)], ValueError, "NaN or inf"),
])
def test_quantize_int8_rejects_bad_calibration(batches, error, message):
    with pytest.raises(error, match=message):
        quantize_int8(small_cnn(), batches)


# ---------------------------------------------------------------- distillation

def _reference_kd(s, t, y, T, alpha):
    def softmax(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)
    pt, ps = softmax(t / T), softmax(s / T)
    kl = (pt * (np.log(pt) - np.log(ps))).sum(1).mean()
    ce = -np.log(softmax(s)[np.arange(len(y)), y]).mean()
    return alpha * T * T * kl + (1 - alpha) * ce


def test_distillation_loss_value_and_gradient():
    rng = np.random.default_rng(0)
    s, t, y = rng.normal(0, 2, (5, 4)), rng.normal(0, 3, (5, 4)), rng.integers(0, 4, 5)
    for T, alpha in [(4.0, 0.9), (2.0, 0.5), (1.0, 0.0), (3.0, 1.0)]:
        assert distillation_loss(Tensor(s), t, y, T, alpha).item() == pytest.approx(_reference_kd(s, t, y, T, alpha), rel=1e-6)
    z = Tensor(s.copy(), requires_grad=True)
    distillation_loss(z, t, y, 3.0, 0.7).backward()
    h, numeric = 1e-6, np.zeros_like(s)
    for i in np.ndindex(s.shape):
        up, down = s.copy(), s.copy()
        up[i] += h; down[i] -= h
        numeric[i] = (_reference_kd(up, t, y, 3.0, 0.7) - _reference_kd(down, t, y, 3.0, 0.7)) / (2 * h)
    np.testing.assert_allclose(z.grad.data, numeric, rtol=1e-4, atol=1e-7)
    with pytest.raises(ValueError, match="do not match"):
        distillation_loss(Tensor(s), t[:2], y)
    with pytest.raises(ValueError, match="temperature"):
        distillation_loss(Tensor(s), t, y, temperature=-1)


def test_distill_moves_the_student_toward_the_teacher():
    teacher = small_cnn(8)
    x = images(64, seed=9)
    soft = logits(teacher, x)
    manual_seed(1)
    student = Sequential(Flatten(), Linear(64, 4), ReLU(), Linear(4, 5))
    def gap():                                   # the soft loss itself, by the float64 reference
        return _reference_kd(logits(student, x).astype(np.float64), soft, soft.argmax(1), 2.0, 1.0)
    before = gap()
    batches = [(Tensor(x[i:i + 16]), soft[i:i + 16].argmax(1)) for i in range(0, 64, 16)]
    hist = distill(student, teacher, batches, epochs=15, lr=1e-2, temperature=2.0, alpha=1.0)
    assert hist['loss'][-1] < hist['loss'][0] / 2
    assert gap() < before / 2
    assert count_parameters(student) <= count_parameters(teacher) / 2


# ---------------------------------------------------------------- file format

def test_sparse_encoding_by_hand_and_round_trip():
    mask, values = encode_sparse(np.array([0, 3, 0, 0, 5, 0, 0, 0, 7], np.int8))
    np.testing.assert_array_equal(mask, [0b01001000, 0b10000000])
    np.testing.assert_array_equal(values, [3, 5, 7])
    rng = np.random.default_rng(0)
    for shape in [(1,), (13,), (4, 5, 3)]:
        a = (rng.normal(size=shape) * (rng.random(shape) < 0.3)).astype(np.float32)
        np.testing.assert_array_equal(decode_sparse(*encode_sparse(a), shape), a)
    with pytest.raises(ValueError, match="non-zeros"):
        decode_sparse(mask, values[:1], (9,))


@pytest.mark.parametrize("kind", ["float32", "pruned", "int8", "pruned int8"])
def test_save_load_round_trip_gives_identical_logits(tmp_path, kind):
    m = small_cnn(11)
    x = images(20, seed=12)
    if 'pruned' in kind: magnitude_prune(m, 0.8)
    model = quantize_int8(m, [x]) if 'int8' in kind else m
    path = save_compressed(model, tmp_path / 'model.npz')
    loaded = load_compressed(path)
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(logits(loaded, x), logits(model, x))
    with np.load(path, allow_pickle=False) as f:
        arch = json.loads(f['architecture.json'].tobytes())
        files = set(f.files)
    big = '9.weight' if kind in ('float32', 'pruned') else '6.weight_q'
    assert arch['tensors'][big]['encoding'] == ('bitmask' if 'pruned' in kind else 'dense')
    assert (big + '@mask' in files) == ('pruned' in kind)
    if 'int8' in kind: assert arch['tensors'][big]['dtype'] == '|i1'


def test_compressed_files_shrink():
    rng = np.random.default_rng(0)
    manual_seed(0)
    m = Sequential(Linear(400, 300), ReLU(), Linear(300, 10))
    x = rng.random((50, 400)).astype(np.float32)
    import tempfile, os
    with tempfile.TemporaryDirectory() as d:
        size = lambda model, name: os.path.getsize(save_compressed(model, os.path.join(d, name)))
        dense = size(m, 'f.npz')
        int8 = size(quantize_int8(m, [x]), 'q.npz')
        magnitude_prune(m, 0.9)
        sparse_int8 = size(quantize_int8(m, [x]), 'pq.npz')
        assert dense > 4 * 121_000 * 0.9                           # float32 weights hardly deflate
        assert int8 < 0.3 * dense and sparse_int8 < 0.1 * dense


def test_bad_files_get_clear_errors_and_failed_saves_keep_the_old_file(tmp_path):
    m = small_cnn()
    good = save_compressed(m, tmp_path / 'm.npz')
    before = open(good, 'rb').read()

    class Odd(Module):
        def forward(self, x): return x
    with pytest.raises(TypeError, match="got Odd at '1'"):
        save_compressed(Sequential(Linear(2, 2), Odd()), good)
    assert open(good, 'rb').read() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.npz']          # no temp file left
    with pytest.raises(FileNotFoundError):
        load_compressed(tmp_path / 'nope.npz')
    (tmp_path / 'junk.npz').write_bytes(b'garbage')
    with pytest.raises(ValueError, match="not an .npz archive"):
        load_compressed(tmp_path / 'junk.npz')
    np.savez(tmp_path / 'evil.npz', **{'architecture.json': np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="pickled"):
        load_compressed(tmp_path / 'evil.npz')
    with pytest.raises(ValueError, match="not written by save_compressed"):
        load_compressed(save_checkpoint(tmp_path / 'ckpt.npz', m))
    with np.load(good, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    arch = json.loads(data['architecture.json'].tobytes())
    for edit, message in [(lambda a: a.update(version=99), "format version 99"),
                          (lambda a: a['model']['layers'][0].update(type='Warp'), "unknown layer type 'Warp'"),
                          (lambda a: a['tensors']['0.weight'].update(shape=[2, 2]), "the table says")]:
        bad = copy.deepcopy(arch); edit(bad)
        np.savez(tmp_path / 'bad.npz', **{**data, 'architecture.json': np.frombuffer(json.dumps(bad).encode(), np.uint8)})
        with pytest.raises(ValueError, match=message):
            load_compressed(tmp_path / 'bad.npz')
