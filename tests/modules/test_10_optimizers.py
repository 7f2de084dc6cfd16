"""Protected tests for module 10 (Optimizers): SGD (momentum, Nesterov, weight decay), Adam and AdamW,
learning-rate schedules, and gradient clipping.

Run against the exported package; imports modules 02-04, 09 and 10 only. Every update rule is
written here straight from its formula, in float64, and run side by side with the optimizer over
several steps of random gradients.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinytorch.tensor import Tensor, manual_seed
from tinytorch.layers import Linear
from tinytorch.optimizers import SGD, Adam, AdamW, CosineWarmupLR, StepLR, clip_grad_norm
import tinytorch.autograd  # noqa: F401  (backward, for the end-to-end check)

checks = settings(max_examples=20, deadline=None, derandomize=True, database=None)


def run_steps(make_opt, shape=(3, 4), n_steps=6, seed=0, dtype=np.float32):
    "Apply optimizer steps with random gradients; return (start, grads, weights after each step)."
    rng = np.random.default_rng(seed)
    w0 = rng.standard_normal(shape).astype(dtype)
    grads = [rng.standard_normal(shape).astype(dtype) for _ in range(n_steps)]
    p = Tensor(w0.copy(), requires_grad=True)
    opt = make_opt([p])
    history = []
    for g in grads:
        p.grad = Tensor(g.copy())
        opt.step()
        np.testing.assert_array_equal(p.grad.data, g)      # the gradient itself is never modified
        assert p.data.dtype == dtype
        history.append(p.data.astype(np.float64))
    return w0.astype(np.float64), [g.astype(np.float64) for g in grads], history


def sgd_reference(w, grads, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    out, buf = [], np.zeros_like(w)
    for g in grads:
        g = g + weight_decay * w
        buf = momentum * buf + g
        step = (g + momentum * buf) if nesterov else (buf if momentum else g)
        w = w - lr * step
        out.append(w)
    return out


def adam_reference(w, grads, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    (b1, b2), m, v, out = betas, np.zeros_like(w), np.zeros_like(w), []
    for t, g in enumerate(grads, start=1):
        if decoupled: w = w * (1 - lr * weight_decay)
        else: g = g + weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        w = w - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(w)
    return out


# --- SGD --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [dict(lr=0.1), dict(lr=0.1, weight_decay=0.01), dict(lr=0.05, momentum=0.9),
                                dict(lr=0.05, momentum=0.9, nesterov=True),
                                dict(lr=0.05, momentum=0.5, nesterov=True, weight_decay=0.1),
                                dict(lr=0.2, momentum=0.3, weight_decay=0.05), dict(lr=0.0, momentum=0.9)])
def test_sgd_matches_the_formulas(kw):
    w0, grads, got = run_steps(lambda ps: SGD(ps, **kw))
    for step, (a, b) in enumerate(zip(got, sgd_reference(w0, grads, **kw))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"step {step + 1}")


@checks
@given(lr=st.floats(0.001, 1.0), momentum=st.floats(0.0, 0.99), nesterov=st.booleans(),
       weight_decay=st.sampled_from([0.0, 0.01, 0.3]), seed=st.integers(0, 2**31))
def test_sgd_random_settings(lr, momentum, nesterov, weight_decay, seed):
    if momentum == 0: nesterov = False
    kw = dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    w0, grads, got = run_steps(lambda ps: SGD(ps, **kw), shape=(5,), n_steps=4, seed=seed, dtype=np.float64)
    for a, b in zip(got, sgd_reference(w0, grads, **kw)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_sgd_momentum_by_hand():
    p = Tensor(np.array([1.0]), requires_grad=True)
    opt = SGD([p], lr=0.1, momentum=0.9)
    p.grad = Tensor(np.array([0.5])); opt.step()
    np.testing.assert_allclose(p.data, [0.95])
    p.grad = Tensor(np.array([0.5])); opt.step()          # buffer 0.9·0.5 + 0.5 = 0.95
    np.testing.assert_allclose(p.data, [0.855])


def test_parameters_without_gradients_are_left_alone():
    a, b = Tensor(np.array([1.0, 2.0]), requires_grad=True), Tensor(np.array([3.0]), requires_grad=True)
    opt = SGD([a, b], lr=1.0, momentum=0.5)
    a.grad = Tensor(np.array([1.0, 1.0]))
    opt.step()
    np.testing.assert_array_equal(a.data, [0.0, 1.0])
    np.testing.assert_array_equal(b.data, [3.0])
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_adam_bias_correction_counts_each_parameters_own_steps():
    "A parameter first updated at the optimizer's 2nd step still gets a first-step (t = 1) correction."
    a, b = Tensor(np.zeros(2), requires_grad=True), Tensor(np.zeros(2), requires_grad=True)
    opt = Adam([a, b], lr=0.1)
    a.grad = Tensor(np.array([1.0, -2.0])); opt.step()
    a.grad, b.grad = Tensor(np.array([1.0, -2.0])), Tensor(np.array([3.0, -0.5]))
    opt.step()
    np.testing.assert_allclose(b.data, -0.1 * np.sign([3.0, -0.5]), rtol=1e-6)   # first Adam step: ±lr


# --- Adam and AdamW ---------------------------------------------------------------------------------

ADAM_SETTINGS = [dict(lr=0.01), dict(lr=0.1, betas=(0.8, 0.99)), dict(lr=0.01, weight_decay=0.1),
                 dict(lr=0.05, betas=(0.5, 0.9), eps=1e-3), dict(lr=0.02, betas=(0.0, 0.5))]


@pytest.mark.parametrize("kw", ADAM_SETTINGS)
def test_adam_matches_the_formulas(kw):
    w0, grads, got = run_steps(lambda ps: Adam(ps, **kw))
    for step, (a, b) in enumerate(zip(got, adam_reference(w0, grads, **kw))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"step {step + 1}")


@pytest.mark.parametrize("kw", ADAM_SETTINGS)
def test_adamw_matches_the_formulas(kw):
    w0, grads, got = run_steps(lambda ps: AdamW(ps, **kw))
    ref = adam_reference(w0, grads, **{"weight_decay": 0.01, **kw}, decoupled=True)   # AdamW's default decay
    for step, (a, b) in enumerate(zip(got, ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"step {step + 1}")


@checks
@given(lr=st.floats(1e-4, 0.5), b1=st.floats(0.0, 0.99), b2=st.floats(0.5, 0.9999), wd=st.sampled_from([0.0, 0.1]),
       decoupled=st.booleans(), seed=st.integers(0, 2**31))
def test_adam_random_settings(lr, b1, b2, wd, decoupled, seed):
    cls = AdamW if decoupled else Adam
    w0, grads, got = run_steps(lambda ps: cls(ps, lr=lr, betas=(b1, b2), weight_decay=wd), shape=(4,), n_steps=4,
                               seed=seed, dtype=np.float64)
    ref = adam_reference(w0, grads, lr=lr, betas=(b1, b2), weight_decay=wd, decoupled=decoupled)
    for a, b in zip(got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_adam_first_step_moves_every_weight_by_lr():
    p = Tensor(np.array([1.0, 1.0, 1.0], np.float32), requires_grad=True)
    p.grad = Tensor(np.array([1e-3, -5.0, 100.0], np.float32))
    Adam([p], lr=0.1).step()
    np.testing.assert_allclose(p.data, [0.9, 1.1, 0.9], rtol=1e-5)


def test_l2_versus_decoupled_weight_decay():
    pa, pw = Tensor(np.array([2.0]), requires_grad=True), Tensor(np.array([2.0]), requires_grad=True)
    pa.grad, pw.grad = Tensor(np.array([0.0])), Tensor(np.array([0.0]))
    Adam([pa], lr=0.1, weight_decay=0.5).step()
    AdamW([pw], lr=0.1, weight_decay=0.5).step()
    np.testing.assert_allclose(pa.data, [1.9], rtol=1e-6)              # L2 goes through Adam: moves by lr
    np.testing.assert_allclose(pw.data, [2.0 * (1 - 0.05)], rtol=1e-6)  # decoupled: shrinks by lr·wd


def test_optimizer_state_round_trip_resumes_exactly():
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(4).astype(np.float32) for _ in range(6)]
    for make in (lambda ps: Adam(ps, lr=0.05), lambda ps: SGD(ps, lr=0.05, momentum=0.9, nesterov=True)):
        p1 = Tensor(np.ones(4, np.float32), requires_grad=True)
        opt1 = make([p1])
        for g in grads[:3]: p1.grad = Tensor(g); opt1.step()
        sd = opt1.state_dict()
        p2 = Tensor(p1.data.copy(), requires_grad=True)
        opt2 = make([p2])
        opt2.load_state_dict(sd)
        for g in grads[3:]:
            p1.grad = Tensor(g); opt1.step()
            p2.grad = Tensor(g); opt2.step()
        np.testing.assert_array_equal(p1.data, p2.data)


def test_optimizers_minimise_a_quadratic_with_autograd():
    target = np.array([1.0, -2.0, 3.0])
    for make, steps in [(lambda ps: SGD(ps, lr=0.1), 100), (lambda ps: SGD(ps, lr=0.05, momentum=0.9), 150),
                        (lambda ps: Adam(ps, lr=0.1), 300), (lambda ps: AdamW(ps, lr=0.1, weight_decay=0.0), 300)]:
        w = Tensor(np.zeros(3), requires_grad=True)
        opt = make([w])
        for _ in range(steps):
            opt.zero_grad()
            ((w - Tensor(target)) ** 2).sum().backward()
            opt.step()
        np.testing.assert_allclose(w.data, target, atol=1e-2)


def test_optimizer_input_errors():
    w = Tensor(np.ones(3, np.float32), requires_grad=True)
    with pytest.raises(ValueError):
        SGD([], lr=0.1)
    with pytest.raises(TypeError):
        SGD(w, lr=0.1)                                                     # a single tensor, not a list
    with pytest.raises(TypeError):
        SGD(Linear(2, 2), lr=0.1)                                          # the model, not its parameters
    with pytest.raises(ValueError):
        SGD([w, w], lr=0.1)
    with pytest.raises((TypeError, ValueError)):
        SGD([w], lr=-1.0)
    with pytest.raises((TypeError, ValueError)):
        SGD([w], lr=float("nan"))
    with pytest.raises(ValueError):
        SGD([w], lr=0.1, nesterov=True)
    with pytest.raises(ValueError):
        Adam([w], betas=(0.9, 1.0))
    with pytest.raises(ValueError):
        Adam([w], betas=0.9)
    w.grad = Tensor(np.ones(2, np.float32))
    with pytest.raises(ValueError) as e:
        SGD([w], lr=0.1).step()
    assert "(2,)" in str(e.value) and "(3,)" in str(e.value)


# --- schedules --------------------------------------------------------------------------------------

def lrs(sched, opt, n):
    return [opt.lr] + [(sched.step(), opt.lr)[1] for _ in range(n)]


def test_step_lr():
    opt = SGD([Tensor(np.ones(1), requires_grad=True)], lr=1.0)
    np.testing.assert_allclose(lrs(StepLR(opt, step_size=2, gamma=0.5), opt, 6), [1, 1, 0.5, 0.5, 0.25, 0.25, 0.125])


@pytest.mark.parametrize("warmup, total, base, min_lr", [(4, 14, 0.1, 0.01), (0, 10, 1.0, 0.0), (10, 11, 0.5, 0.1),
                                                         (3, 50, 2e-3, 1e-5)])
def test_cosine_warmup_matches_the_formula(warmup, total, base, min_lr):
    opt = SGD([Tensor(np.ones(1), requires_grad=True)], lr=base)
    got = lrs(CosineWarmupLR(opt, warmup_steps=warmup, total_steps=total, min_lr=min_lr), opt, total + 5)
    for t, lr in enumerate(got):
        if t < warmup: want = base * (t + 1) / (warmup + 1)                        # linear ramp
        else:
            progress = min(1.0, (t - warmup) / (total - warmup))
            want = min_lr + (base - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        assert lr == pytest.approx(want, rel=1e-9, abs=1e-15), f"t={t}"
    assert got[warmup] == pytest.approx(base)                                      # the peak
    assert got[-1] == pytest.approx(min_lr)                                        # then flat


def test_schedule_errors():
    opt = SGD([Tensor(np.ones(1), requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError):
        CosineWarmupLR(opt, 10, 10)
    with pytest.raises(ValueError):
        StepLR(opt, 0)
    with pytest.raises(TypeError):
        StepLR([Tensor(np.ones(1))], 1)


# --- gradient clipping ------------------------------------------------------------------------------

def test_clip_grad_norm_by_hand():
    a, b = Tensor(np.zeros(2), requires_grad=True), Tensor(np.zeros(1), requires_grad=True)
    a.grad, b.grad = Tensor(np.array([3.0, 0.0])), Tensor(np.array([4.0]))
    assert clip_grad_norm([a, b], max_norm=1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(a.grad.data, [0.6, 0.0], rtol=1e-5)
    np.testing.assert_allclose(b.grad.data, [0.8], rtol=1e-5)
    assert clip_grad_norm([a, b], max_norm=10.0) == pytest.approx(1.0, rel=1e-5)   # small: unchanged
    np.testing.assert_allclose(b.grad.data, [0.8], rtol=1e-5)


@checks
@given(sizes=st.lists(st.integers(1, 5), min_size=1, max_size=4), scale=st.floats(0.01, 100.0),
       max_norm=st.floats(0.1, 10.0), seed=st.integers(0, 2**31))
def test_clip_grad_norm_random(sizes, scale, max_norm, seed):
    rng = np.random.default_rng(seed)
    grads = [rng.standard_normal(n) * scale for n in sizes]
    params = [Tensor(np.zeros(n), requires_grad=True) for n in sizes]
    for p, g in zip(params, grads): p.grad = Tensor(g.copy())
    params.append(Tensor(np.zeros(2), requires_grad=True))                       # no gradient: ignored
    total = math.sqrt(sum(float((g ** 2).sum()) for g in grads))
    assert clip_grad_norm(params, max_norm) == pytest.approx(total, rel=1e-9)
    factor = min(1.0, max_norm / total)
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad.data, g * factor, rtol=1e-5)          # same direction, scaled
    new_total = math.sqrt(sum(float((p.grad.data ** 2).sum()) for p in params if p.grad is not None))
    assert new_total <= max_norm * (1 + 1e-5)
    assert params[-1].grad is None


def test_clip_grad_norm_never_writes_into_a_shared_array():
    a, b = Tensor(np.zeros(2), requires_grad=True), Tensor(np.zeros(2), requires_grad=True)
    shared = np.array([3.0, 4.0])
    a.grad = Tensor(shared)
    clip_grad_norm([a, b], 1.0)
    np.testing.assert_array_equal(shared, [3.0, 4.0])
    np.testing.assert_allclose(a.grad.data, [0.6, 0.8], rtol=1e-5)
    with pytest.raises((TypeError, ValueError)):
        clip_grad_norm([a], -1)
