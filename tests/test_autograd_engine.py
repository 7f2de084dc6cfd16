"""The autograd engine: accumulation, deep graphs, freeing, memory over 1,000 steps, no_grad, detach, errors."""
import gc
import inspect
import sys
import tracemalloc
import weakref

import numpy as np
import pytest

import tinytorch.autograd as ag
from tinytorch.autograd import gradcheck, no_grad
from tinytorch.tensor import Function, Mul, MatMul, Tensor, _GradMode, grad_enabled, manual_seed, maximum, randn


def test_reused_tensor_accumulates():
    x = Tensor([1.5, -2.0], requires_grad=True)
    a = x * x                 # x used twice here ...
    y = (a * x + x.exp() * 2 + a).sum()   # ... and in three more places
    y.backward()
    xv = x.numpy().astype(np.float64)
    np.testing.assert_allclose(x.grad.numpy(), 3 * xv ** 2 + 2 * np.exp(xv) + 2 * xv, rtol=1e-6)


def test_intermediate_used_in_many_branches():
    x = Tensor(np.linspace(-1, 1, 6).reshape(2, 3), requires_grad=True)
    h = x.tanh()
    out = (h * 2 + h * h + h.sum(axis=0) - h[0]).sum()
    out.backward()
    hv = np.tanh(x.data)
    dh = 2 + 2 * hv + 2                         # *2, h*h, the column sums (each reaches both rows) ...
    dh[0] -= 2                                  # ... minus row 0, which is also broadcast to both rows
    np.testing.assert_allclose(x.grad.numpy(), dh * (1 - hv ** 2), rtol=1e-12)


def test_broadcast_gradients_reduce_to_input_shape():
    x = Tensor(np.ones((4, 1, 3)), requires_grad=True)
    b = Tensor(np.arange(5.0).reshape(5, 1), requires_grad=True)
    s = Tensor(2.0, dtype=np.float64, requires_grad=True)
    ((x + b) * s).sum().backward()
    assert x.grad.shape == (4, 1, 3) and b.grad.shape == (5, 1) and s.grad.shape == ()
    np.testing.assert_array_equal(x.grad.numpy(), np.full((4, 1, 3), 10.0))      # 5 copies × s
    np.testing.assert_array_equal(b.grad.numpy(), np.full((5, 1), 24.0))         # 12 copies × s
    assert s.grad.item() == pytest.approx(((np.ones((4, 1, 3)) + np.arange(5.0).reshape(5, 1))).sum())


def test_constant_parents_get_no_gradient_and_no_work():
    seen = []
    rule = MatMul.backward
    MatMul.backward = lambda self, g: seen.append(rule(self, g)) or seen[-1]
    try:
        a, w = Tensor(np.ones((3, 4)), requires_grad=True), Tensor(np.ones((4, 2)))
        (a @ w).sum().backward()
    finally:
        MatMul.backward = rule
    assert seen[0][0] is not None and seen[0][1] is None       # the constant's gradient was never computed
    assert w.grad is None


def test_deep_chain_without_recursion():
    x = Tensor([1.0], requires_grad=True)
    c, z = Tensor([1.0001]), Tensor([0.0])
    y = x
    for _ in range(5_000): y = y * c + z                       # 10,000 ops deep
    assert len(ag._topo_order(y)) == 10_000
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 60)          # any recursive walk of the graph would fail now
    try:
        y.backward()
    finally:
        sys.setrecursionlimit(limit)
    np.testing.assert_allclose(x.grad.numpy(), [1.0001 ** 5_000], rtol=1e-3)


def test_very_deep_chain_100k():
    x = Tensor([0.5], requires_grad=True)
    y = x
    for _ in range(100_000): y = -y                              # 100,000 Neg ops
    y.backward()
    assert x.grad.item() == 1.0


def test_graph_is_freed_after_backward():
    x = Tensor(np.ones(3), requires_grad=True)
    h = x.exp()
    op = weakref.ref(h._ctx)
    y = (h * 2).sum()
    y.backward()
    assert op() is None                          # the op (and the array it saved) is gone
    assert h._ctx is ag._FREED and y._ctx is ag._FREED
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_retain_graph_allows_second_backward():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_array_equal(x.grad.numpy(), 4 * x.numpy())


def _live_ops():
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, Function) and o is not ag._FREED)


def test_memory_flat_over_1000_training_steps():
    manual_seed(0)
    X, Y = randn(32, 8), randn(32, 1)
    W1 = Tensor(randn(8, 16).data * 0.3, requires_grad=True)
    W2 = Tensor(randn(16, 1).data * 0.3, requires_grad=True)
    b1 = Tensor(np.zeros(16, np.float32), requires_grad=True)
    before = _live_ops()
    kept, mem = [], {}
    tracemalloc.start()
    try:
        for step in range(1000):
            loss = ((maximum(X @ W1 + b1, 0) @ W2 - Y) ** 2).mean()
            loss.backward()
            with no_grad():
                for p in (W1, b1, W2):
                    p.data -= 0.05 * p.grad.data
                    p.zero_grad()
            kept.append(loss)                     # keeping the loss tensors must not keep their graphs
            if step in (99, 999): mem[step] = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert _live_ops() == before
    per_step = (mem[999] - mem[99]) / 900
    # one kept 0-d loss tensor is ~200 B; one step's graph with its activations would be > 8 kB
    assert per_step < 1000, f"memory grew by {per_step:.0f} B per step"
    assert kept[-1].item() < kept[0].item()


def test_no_grad_records_nothing():
    w = Tensor([1.0, 2.0], requires_grad=True)
    with no_grad():
        y = (w * 3).exp().sum()
        assert not grad_enabled()
    assert grad_enabled()
    assert y.requires_grad is False and y._ctx is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_no_grad_decorator_nesting_and_exceptions():
    @no_grad
    def f(x): return x * 2, grad_enabled()

    @no_grad()
    def g(x): return x * 3

    w = Tensor([1.0], requires_grad=True)
    out, flag = f(w)
    assert flag is False and out.requires_grad is False and g(w).requires_grad is False
    assert f.__name__ == "f"
    with pytest.raises(ZeroDivisionError):
        with no_grad():
            1 / 0
    assert _GradMode.enabled is True
    with no_grad():
        with no_grad():
            pass
        assert _GradMode.enabled is False
    assert _GradMode.enabled is True

    @no_grad
    def recurse(n): return grad_enabled() if n == 0 else recurse(n - 1)
    assert recurse(3) is False and grad_enabled()


def test_detach():
    w = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    d = w.detach()
    assert d.requires_grad is False and d._ctx is None and np.shares_memory(d.data, w.data)
    h = w * 2
    (h.detach() * w).sum().backward()                 # gradient flows only through the non-detached w
    np.testing.assert_array_equal(w.grad.numpy(), 2 * w.numpy())


def test_zero_grad():
    w = Tensor([1.0, 2.0], requires_grad=True)
    (w * 5).sum().backward()
    g = w.grad.data
    w.zero_grad(set_to_none=False)
    assert w.grad.data is g and not g.any()
    w.zero_grad()
    assert w.grad is None


def test_backward_errors():
    v = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"shape \(2, 3\)"):
        (v * 2).backward()
    with pytest.raises(ValueError, match=r"grad has shape \(3,\) but the tensor has shape \(2, 3\)"):
        (v * 2).backward(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).backward()


def test_bad_rule_is_reported_by_name():
    class Twice(Function):
        def forward(self, x): return x * 2
        def backward(self, grad): return (grad[:1],)               # wrong shape

    class NoTuple(Function):
        def forward(self, x): return x * 2
        def backward(self, grad): return grad * 2

    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"Twice.backward returned a gradient of shape \(1,\) for an input of shape \(3,\)"):
        Twice.apply(x).sum().backward()
    with pytest.raises(RuntimeError, match="NoTuple.backward must return a tuple"):
        NoTuple.apply(x).sum().backward()


def test_leaf_gradients_are_private_and_in_leaf_dtype():
    p, q = Tensor(np.ones(3, np.float32), requires_grad=True), Tensor(np.ones(3, np.float32), requires_grad=True)
    r = Tensor(np.ones((3, 1), np.float32), requires_grad=True)
    seed = np.ones(3, np.float32)
    (p + q + r.reshape(3) * Tensor(np.ones(3))).backward(seed)   # the float64 constant upcasts the graph
    grads = [p.grad.data, q.grad.data, r.grad.data, seed]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.shares_memory(grads[i], grads[j]), (i, j)
    assert all(t.grad.dtype == np.float32 and t.grad.data.flags.writeable for t in (p, q, r))
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    x.sum().backward()                               # Sum's gradient is a read-only broadcast view ...
    x.grad.data += 1                                 # ... but the leaf gets a writable array of its own


def test_gradients_accumulate_across_backward_calls():
    w = Tensor([1.0, 2.0], requires_grad=True)
    for _ in range(3): (w * w).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), 6 * w.numpy())


def test_gradcheck_reports_and_restores():
    good = Mul.backward
    Mul.backward = lambda self, grad: (grad * self.parents[1].data, grad)     # wrong for the second input
    a = Tensor(np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32), requires_grad=True)
    b = Tensor(np.random.default_rng(1).standard_normal((2, 3)).astype(np.float32))
    try:
        with pytest.raises(AssertionError, match=r"input 1 \(shape \(2, 3\)\): max abs error"):
            gradcheck(lambda a, b: a * b, a, b)
    finally:
        Mul.backward = good
    assert a.dtype == np.float32 and b.dtype == np.float32 and b.requires_grad is False and a.grad is None
    assert gradcheck(lambda a, b: a * b, a, b)
    with pytest.raises(ValueError, match="at least one floating-point Tensor"):
        gradcheck(lambda n: n, 3)


def test_gradcheck_works_under_no_grad():
    with no_grad():
        assert gradcheck(lambda x: x.exp(), Tensor(np.ones(2), requires_grad=True))
        assert not grad_enabled()
