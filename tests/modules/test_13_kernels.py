"""Protected tests of module 13 (Kernels), run against the exported package.

Every kernel is checked against an independent reference (NumPy's own products, module 06's loop
convolution, a float64 softmax, int64 integer products, central differences), the KV cache against
the full model, and the fast-kernel switch against the plain framework. Nothing here times anything.
Imports only modules 01-13 and runs in seconds.
"""
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from tinytorch.tensor import Tensor, Function, manual_seed
from tinytorch.activations import ReLU, relu
from tinytorch.layers import Linear
from tinytorch.dense import Sequential
from tinytorch.spatial import Conv2d, BatchNorm2d, MaxPool2d, Flatten, conv2d, conv2d_naive
from tinytorch.autograd import no_grad
from tinytorch.optimizers import SGD, Optimizer
from tinytorch.training import CrossEntropyLoss
from tinytorch.compression import QuantizedGemm, quantize_int8
from tinytorch.kernels import (
    Profiler, matmul_naive, matmul_blocked, window_view, conv2d_strided, conv2d_fused, softmax_cross_entropy,
    cross_entropy_composed, int8_gemm, INT8_EXACT_K, parallel_batches, TinyGPT, generate, _block_step,
    use_fast_kernels, fast_kernels, fast_kernels_enabled, measure_bandwidth, gflops)

rng = np.random.default_rng(0)


def small_cnn(seed=0):
    manual_seed(seed)
    return Sequential(Conv2d(1, 4, 3, padding=1), ReLU(), Conv2d(4, 6, 3, padding=1), BatchNorm2d(6), ReLU(),
                      MaxPool2d(2), Flatten(), Linear(6 * 4 * 4, 5))


def grads(fn, *tensors):
    for t in tensors: t.grad = None
    out = fn()
    out.backward(np.ones(out.shape, out.dtype))
    return [out.data] + [t.grad.data.copy() for t in tensors]


# ---------------------------------------------------------------- profiler

def test_profiler_counts_ops_and_restores_the_framework():
    apply, backward, step = Function.__dict__['apply'], Tensor.backward, Optimizer.step
    a = Tensor(np.ones((500, 500), np.float32), requires_grad=True)
    opt = SGD([a], lr=0.1)
    with Profiler() as prof:
        loss = ((a * 3.0) * a).sum()
        loss.backward()
        opt.step()
    rows = {r['op']: r for r in prof.rows()}
    assert set(rows) == {'Mul', 'Sum', 'SGD.step'}
    assert rows['Mul']['calls'] == 2 and rows['Sum']['calls'] == 1 and rows['SGD.step']['calls'] == 1
    assert rows['Mul']['backward'] > 0 and rows['SGD.step']['step'] > 0
    assert rows['Mul']['bytes'] >= 2 * 500 * 500 * 4               # two new float32 arrays at least
    np.testing.assert_allclose(a.grad.data, 6.0)                    # d(3a²)/da: profiling changes nothing
    assert Function.__dict__['apply'] is apply and Tensor.backward is backward and Optimizer.step is step
    assert 'Mul' in prof.table() and 'SGD.step' in prof.table()
    t = prof.totals()
    assert t['wall'] >= t['forward'] > 0 and t['backward'] > 0


def test_profiler_restores_on_error_and_refuses_nesting():
    apply = Function.__dict__['apply']
    with pytest.raises(KeyError):
        with Profiler(memory=False):
            Tensor(np.ones(3)).exp()
            raise KeyError('x')
    assert Function.__dict__['apply'] is apply
    prof = Profiler()
    with prof:
        with pytest.raises(RuntimeError, match="already running"):
            prof.__enter__()
    assert Function.__dict__['apply'] is apply


# ---------------------------------------------------------------- matmul and convolution

@pytest.mark.parametrize("block", [5, 32, 100])
def test_matmuls_match_numpy(block):
    a, b = rng.standard_normal((37, 23)).astype(np.float32), rng.standard_normal((23, 41)).astype(np.float32)
    np.testing.assert_allclose(matmul_blocked(a, b, block), a @ b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(matmul_naive(a[:6], b[:, :5]), a[:6] @ b[:, :5], rtol=1e-5, atol=1e-5)
    assert matmul_naive([[1, 2]], [[3], [4]])[0, 0] == 11
    with pytest.raises(ValueError, match=r"\(M, K\) @ \(K, N\)"):
        matmul_blocked(a, a)


def test_window_view_is_a_strided_view():
    x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    for k, s in [((3, 3), (1, 1)), ((2, 3), (2, 2)), ((4, 1), (3, 1))]:
        v = window_view(x, k, s)
        ref = sliding_window_view(x, k, axis=(2, 3))[:, :, ::s[0], ::s[1]]
        np.testing.assert_array_equal(v, ref)
        assert np.shares_memory(v, x)
    with pytest.raises(ValueError, match="does not fit"):
        window_view(x, (10, 1))


@pytest.mark.parametrize("method", ["tensordot", "einsum"])
def test_strided_convolution_matches_the_loops(method):
    x = rng.standard_normal((2, 3, 8, 7)).astype(np.float32)
    w, b = rng.standard_normal((4, 3, 3, 2)).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    for stride, padding in [((1, 1), (0, 0)), ((2, 1), (1, 2))]:
        np.testing.assert_allclose(conv2d_strided(x, w, b, stride, padding, method), conv2d_naive(x, w, b, stride, padding),
                                   rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="method must be"):
        conv2d_strided(x, w, method='fft')


# ---------------------------------------------------------------- fused ops

@pytest.mark.parametrize("stride, padding, use_relu, with_bias", [
    ((1, 1), (1, 1), True, True), ((2, 2), (0, 0), True, False), ((1, 2), (2, 1), False, True)])
def test_fused_conv_matches_framework_ops(stride, padding, use_relu, with_bias):
    X = Tensor(rng.standard_normal((2, 3, 7, 8)).astype(np.float32), requires_grad=True)
    W = Tensor((rng.standard_normal((4, 3, 3, 3)) * 0.4).astype(np.float32), requires_grad=True)
    B = Tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True) if with_bias else None
    params = (X, W, B) if with_bias else (X, W)
    act = relu if use_relu else (lambda t: t)
    plain = grads(lambda: act(conv2d(X, W, B, stride, padding)), *params)
    fused = grads(lambda: conv2d_fused(X, W, B, stride, padding, relu=use_relu), *params)
    for p, f in zip(plain, fused):
        np.testing.assert_allclose(f, p, rtol=1e-4, atol=1e-4)


def test_fused_conv_gradient_against_central_differences():
    x, w, b = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((2, 2, 3, 3)), rng.standard_normal(2)
    v = rng.standard_normal((1, 2, 5, 5))
    def f(xa, wa, ba):
        return float((conv2d_fused(Tensor(xa), Tensor(wa), Tensor(ba), (1, 1), (1, 1), relu=True).data * v).sum())
    X, Wt, Bt = Tensor(x.copy(), requires_grad=True), Tensor(w.copy(), requires_grad=True), Tensor(b.copy(), requires_grad=True)
    conv2d_fused(X, Wt, Bt, (1, 1), (1, 1), relu=True).backward(v)
    for arr, t, which in ((x, X, 0), (w, Wt, 1), (b, Bt, 2)):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            args = [x.copy(), w.copy(), b.copy()]
            args[which][i] += 1e-6; up = f(*args)
            args[which][i] -= 2e-6; down = f(*args)
            num[i] = (up - down) / 2e-6
        np.testing.assert_allclose(t.grad.data, num, rtol=1e-4, atol=1e-6)


def test_softmax_cross_entropy_by_formula():
    z = (rng.standard_normal((16, 7)) * 4).astype(np.float64)
    y = rng.integers(0, 7, 16)
    p = np.exp(z - z.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
    Z = Tensor(z, requires_grad=True)
    loss = softmax_cross_entropy(Z, y)
    assert loss.item() == pytest.approx(-np.log(p[np.arange(16), y]).mean(), rel=1e-10)
    loss.backward()
    np.testing.assert_allclose(Z.grad.data, (p - np.eye(7)[y]) / 16, atol=1e-12)
    assert cross_entropy_composed(Tensor(z), y).item() == pytest.approx(loss.item(), rel=1e-10)
    assert softmax_cross_entropy(Tensor([[0.0, 1000.0, -1000.0]]), [2]).item() == pytest.approx(2000.0)
    with pytest.raises(ValueError, match="targets must be in"):
        softmax_cross_entropy(Z, np.full(16, 9))


# ---------------------------------------------------------------- int8 GEMM

def test_int8_gemm_is_exact_where_float32_cannot_be():
    ones = np.full((3, 2001), 127, np.int8)
    exact = ones.astype(np.int64) @ ones.T.astype(np.int64)
    assert exact[0, 0] % 2 == 1 and exact[0, 0] > 2 ** 24                  # no float32 can hold it
    np.testing.assert_array_equal(int8_gemm(ones, ones.T), exact)
    for M, K, N in [(5, 1, 4), (9, 1024, 3), (4, 3000, 6), (64, 216, 300)]:
        a = rng.integers(-128, 128, (M, K)).astype(np.int8)
        b = rng.integers(-128, 128, (K, N)).astype(np.int8)
        out = int8_gemm(a, b)
        assert out.dtype == np.int32
        np.testing.assert_array_equal(out, a.astype(np.int64) @ b.astype(np.int64))
    worst = np.full((1, INT8_EXACT_K), -128, np.int8)
    assert int8_gemm(worst, worst.T)[0, 0] == 2 ** 24
    with pytest.raises(ValueError, match="block_k"):
        int8_gemm(a, b, block_k=INT8_EXACT_K + 1)
    with pytest.raises(TypeError, match="int8"):
        int8_gemm(a.astype(np.int16), b)


# ---------------------------------------------------------------- thread pool

def test_parallel_batches_gives_the_same_answers():
    model = small_cnn(1).eval()
    x = rng.random((21, 1, 8, 8), dtype=np.float32)
    q = quantize_int8(model, [x])
    with no_grad():
        np.testing.assert_allclose(parallel_batches(model, Tensor(x), 4).data, model(Tensor(x)).data, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(parallel_batches(q, Tensor(x), 3).data, q(Tensor(x)).data)
    np.testing.assert_array_equal(parallel_batches(np.sqrt, np.arange(3.0), 10), np.sqrt(np.arange(3.0)))
    with pytest.raises(ValueError, match="workers"):
        parallel_batches(model, Tensor(x), -1)


# ---------------------------------------------------------------- KV cache

def test_kv_cache_matches_the_full_model_and_generates_the_same_tokens():
    manual_seed(2)
    gpt = TinyGPT(vocab_size=40, embed_dim=16, num_heads=2, depth=2, max_len=40).eval()
    seq = rng.integers(0, 40, (2, 9))
    with no_grad():
        full = gpt(seq).data
        caches, outs, start = [{} for _ in gpt.blocks], [], 0
        for size in (4, 1, 2, 2):
            x = gpt.embed(seq[:, start:start + size]) + Tensor(gpt.pos.table[start:start + size])
            for block, cache in zip(gpt.blocks, caches): x = _block_step(block, x, cache)
            outs.append(gpt.head(gpt.norm(x)).data); start += size
    np.testing.assert_allclose(np.concatenate(outs, 1), full, rtol=1e-4, atol=1e-5)
    # greedy decoding, by hand, with the full model
    prompt = rng.integers(0, 40, (2, 3))
    ids = prompt.copy()
    with no_grad():
        for _ in range(12):
            ids = np.concatenate([ids, gpt(ids).data[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(generate(gpt, prompt, 12, use_cache=True), ids)
    np.testing.assert_array_equal(generate(gpt, prompt, 12, use_cache=False), ids)
    with pytest.raises(ValueError, match="max_len"):
        generate(gpt, prompt, 38)


# ---------------------------------------------------------------- the switch

def test_fast_kernels_match_the_plain_ops_and_switch_off_cleanly():
    originals = {(cls, n): cls.__dict__[n] for cls, n in ((Conv2d, 'forward'), (Sequential, 'forward'), (QuantizedGemm, 'int_gemm'))}
    model = small_cnn(3)
    x, y = rng.random((6, 1, 8, 8), dtype=np.float32), rng.integers(0, 5, 6)
    q = quantize_int8(small_cnn(4).eval(), [x])

    def run():
        for p in model.parameters(): p.grad = None
        model.train()
        out = model(Tensor(x))
        CrossEntropyLoss()(out, y).backward()
        with no_grad(): qout = q(Tensor(x)).data
        return [out.data, qout] + [p.grad.data.copy() for p in model.parameters()]

    plain = run()
    assert not fast_kernels_enabled()
    with fast_kernels():
        assert fast_kernels_enabled()
        assert Conv2d.__dict__['forward'] is not originals[(Conv2d, 'forward')]
        fast = run()
    assert not fast_kernels_enabled()
    np.testing.assert_array_equal(fast[1], plain[1])                       # int8: exact
    for i, (p, f) in enumerate(zip(plain, fast)):
        np.testing.assert_allclose(f, p, rtol=1e-4, atol=1e-5, err_msg=f"output {i}")
    for (cls, n), fn in originals.items():
        assert cls.__dict__[n] is fn
    assert use_fast_kernels(True) is False and use_fast_kernels(True) is True
    assert use_fast_kernels(False) is True and not fast_kernels_enabled()
    for (cls, n), fn in originals.items():
        assert cls.__dict__[n] is fn
    with pytest.raises(TypeError, match="True or False"):
        use_fast_kernels(1)


def test_helpers():
    assert measure_bandwidth(megabytes=8, repeats=2) > 0
    assert gflops(2e9, 2.0) == 1.0
    with pytest.raises(ValueError, match="positive"):
        gflops(1, 0)
