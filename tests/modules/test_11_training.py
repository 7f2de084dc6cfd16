"""Protected tests for module 11 (Training): the losses and their gradients, accuracy and the confusion
matrix, the Trainer's step and loop, and pickle-free checkpoints.

Run against the exported package; imports modules 02-11 only. Losses are checked against their
definitions in float64 NumPy and their gradients against central differences; one Trainer step
against a hand-derived SGD update; the loop by training a small MLP on the 1,797 embedded 8x8
digits (seconds, no download). Checkpoint files are written under tmp_path.
"""
import math
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinytorch.tensor import Tensor, manual_seed
from tinytorch.activations import ReLU
from tinytorch.layers import Linear
from tinytorch.dense import MLP, Sequential, count_parameters
from tinytorch.spatial import Flatten
from tinytorch.dataloader import DataLoader, Digits, TensorDataset
from tinytorch.optimizers import SGD, Adam, CosineWarmupLR, StepLR
from tinytorch.training import (
    BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, Trainer, accuracy, confusion_matrix, fashion_cnn,
    load_checkpoint, save_checkpoint)

checks = settings(max_examples=20, deadline=None, derandomize=True, database=None)


def numeric_grad(f, x, h=1e-6):
    "Central differences of a scalar function of a float64 array."
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[i] += h; down[i] -= h
        g[i] = (f(up) - f(down)) / (2 * h)
    return g


def log_softmax_ref(z):
    z = np.asarray(z, np.float64)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def ce_ref(z, y, eps=0.0, reduction="mean"):
    "Cross-entropy against the smoothed target q = (1-eps)·onehot + eps/C, from the definition."
    z = np.asarray(z, np.float64).reshape(-1, np.shape(z)[-1])
    y = np.asarray(y).reshape(-1)
    c = z.shape[1]
    q = np.full(z.shape, eps / c)
    q[np.arange(len(y)), y] += 1 - eps
    per_row = -(q * log_softmax_ref(z)).sum(1)
    return per_row.mean() if reduction == "mean" else per_row.sum()


def bce_ref(x, t, reduction="mean"):
    x, t = np.asarray(x, np.float64), np.asarray(t, np.float64)
    log_s, log_1ms = -np.logaddexp(0, -x), -np.logaddexp(0, x)      # log σ(x), log(1 - σ(x)), both stable
    per = -(t * log_s + (1 - t) * log_1ms)
    return per.mean() if reduction == "mean" else per.sum()


# --- cross-entropy ----------------------------------------------------------------------------------

@checks
@given(n=st.integers(1, 6), c=st.integers(2, 6), eps=st.sampled_from([0.0, 0.1, 0.3, 1.0]),
       reduction=st.sampled_from(["mean", "sum"]), scale=st.sampled_from([0.1, 3.0, 30.0]), seed=st.integers(0, 2**31))
def test_cross_entropy_value(n, c, eps, reduction, scale, seed):
    rng = np.random.default_rng(seed)
    z, y = rng.standard_normal((n, c)) * scale, rng.integers(0, c, n)
    loss = CrossEntropyLoss(label_smoothing=eps, reduction=reduction)(Tensor(z), y)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(ce_ref(z, y, eps, reduction), rel=1e-9, abs=1e-9)


@checks
@given(n=st.integers(1, 4), c=st.integers(2, 5), eps=st.sampled_from([0.0, 0.2]),
       reduction=st.sampled_from(["mean", "sum"]), seed=st.integers(0, 2**31))
def test_cross_entropy_gradient(n, c, eps, reduction, seed):
    rng = np.random.default_rng(seed)
    z, y = rng.standard_normal((n, c)) * 2, rng.integers(0, c, n)
    loss_fn = CrossEntropyLoss(label_smoothing=eps, reduction=reduction)
    zt = Tensor(z.copy(), requires_grad=True)
    loss_fn(zt, y).backward()
    numeric = numeric_grad(lambda a: loss_fn(Tensor(a), y).item(), z)
    np.testing.assert_allclose(zt.grad.data, numeric, atol=1e-7, rtol=1e-6)
    # and the closed form: (softmax - smoothed one-hot) / N
    q = np.full((n, c), eps / c); q[np.arange(n), y] += 1 - eps
    closed = (np.exp(log_softmax_ref(z)) - q) / (n if reduction == "mean" else 1)
    np.testing.assert_allclose(zt.grad.data, closed, atol=1e-10)


def test_cross_entropy_float32_by_hand_and_stable():
    assert CrossEntropyLoss()(Tensor(np.zeros((4, 10), np.float32)), np.arange(4)).item() == pytest.approx(math.log(10))
    big = Tensor(np.array([[1000.0, 0.0, -1000.0], [0.0, 1000.0, 0.0]], np.float32), requires_grad=True)
    ce = CrossEntropyLoss()(big, np.array([0, 0]))
    assert ce.dtype == np.float32
    assert ce.item() == pytest.approx(500.0)                     # (0 + 1000) / 2, no inf or nan
    ce.backward()
    assert np.all(np.isfinite(big.grad.data))
    np.testing.assert_allclose(big.grad.data, [[0, 0, 0], [-0.5, 0.5, 0]], atol=1e-6)


def test_cross_entropy_over_sequences():
    z = np.random.default_rng(0).standard_normal((2, 3, 5))
    y = np.array([[0, 1, 2], [4, 4, 0]])
    assert CrossEntropyLoss()(Tensor(z), y).item() == pytest.approx(ce_ref(z, y))
    zt = Tensor(z.copy(), requires_grad=True)
    CrossEntropyLoss()(zt, y).backward()
    np.testing.assert_allclose(zt.grad.data, numeric_grad(lambda a: CrossEntropyLoss()(Tensor(a), y).item(), z),
                               atol=1e-7)


def test_cross_entropy_errors():
    logits = Tensor(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="4"):
        CrossEntropyLoss()(logits, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match="-1"):
        CrossEntropyLoss()(logits, np.array([0, -1, 2]))
    with pytest.raises(ValueError) as e:
        CrossEntropyLoss()(logits, np.array([0, 1]))
    assert "(3, 4)" in str(e.value) and "(2,)" in str(e.value)
    with pytest.raises(TypeError):
        CrossEntropyLoss()(logits, np.zeros((3, 4)))              # probabilities, not class indices
    with pytest.raises(TypeError):
        CrossEntropyLoss()(np.zeros((3, 4)), [0, 1, 2])
    with pytest.raises(ValueError):
        CrossEntropyLoss(label_smoothing=1.5)


# --- binary cross-entropy and MSE -------------------------------------------------------------------

@checks
@given(shape=st.sampled_from([(5,), (3, 2), (2, 2, 3)]), scale=st.sampled_from([0.5, 4.0, 50.0]),
       reduction=st.sampled_from(["mean", "sum"]), seed=st.integers(0, 2**31))
def test_bce_with_logits_value_and_gradient(shape, scale, reduction, seed):
    rng = np.random.default_rng(seed)
    x, t = rng.standard_normal(shape) * scale, rng.random(shape)
    loss_fn = BCEWithLogitsLoss(reduction=reduction)
    xt = Tensor(x.copy(), requires_grad=True)
    bce = loss_fn(xt, t)
    assert bce.item() == pytest.approx(bce_ref(x, t, reduction), rel=1e-9, abs=1e-9)
    bce.backward()
    sig = 0.5 * (1 + np.tanh(x / 2))
    closed = (sig - t) / (x.size if reduction == "mean" else 1)
    np.testing.assert_allclose(xt.grad.data, closed, atol=1e-10)
    if scale < 10:
        np.testing.assert_allclose(xt.grad.data, numeric_grad(lambda a: loss_fn(Tensor(a), t).item(), x), atol=1e-7)


def test_bce_with_logits_is_stable_at_extremes():
    with np.errstate(over="raise", invalid="raise"):
        right = BCEWithLogitsLoss()(Tensor(np.array([-200.0, 200.0], np.float32)), [0.0, 1.0]).item()
        wrong = BCEWithLogitsLoss()(Tensor(np.array([-200.0, 200.0], np.float32)), [1.0, 0.0]).item()
    assert right == pytest.approx(0.0, abs=1e-6)
    assert wrong == pytest.approx(200.0)
    with pytest.raises(ValueError):
        BCEWithLogitsLoss()(Tensor(np.zeros(3)), np.array([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        BCEWithLogitsLoss()(Tensor(np.zeros(3)), np.zeros(2))


def test_mse_loss():
    pred, target = np.array([[1.0], [2.0], [4.0]]), np.array([[1.5], [2.0], [3.0]])
    assert MSELoss()(Tensor(pred), target).item() == pytest.approx((0.25 + 0 + 1) / 3)
    assert MSELoss("sum")(Tensor(pred), target).item() == pytest.approx(1.25)
    pt = Tensor(pred.copy(), requires_grad=True)
    MSELoss()(pt, target).backward()
    np.testing.assert_allclose(pt.grad.data, 2 * (pred - target) / 3)
    with pytest.raises(ValueError) as e:
        MSELoss()(Tensor(pred), np.ones(3))                          # would broadcast silently
    assert "(3, 1)" in str(e.value) and "(3,)" in str(e.value)


# --- metrics ----------------------------------------------------------------------------------------

def test_accuracy():
    assert accuracy(np.array([[2.0, 1.0], [0.0, 3.0], [5.0, 1.0]]), np.array([0, 1, 1])) == pytest.approx(2 / 3)
    assert accuracy(Tensor(np.eye(4, dtype=np.float32)), Tensor(np.arange(4))) == 1.0
    with pytest.raises(ValueError, match=r"\(4,\)"):
        accuracy(np.zeros((3, 2)), np.zeros(4, int))


@checks
@given(n=st.integers(1, 200), k=st.integers(1, 7), seed=st.integers(0, 2**31))
def test_confusion_matrix_matches_a_loop(n, k, seed):
    rng = np.random.default_rng(seed)
    p, t = rng.integers(0, k, n), rng.integers(0, k, n)
    ref = np.zeros((k, k), int)
    for i, j in zip(t, p): ref[i, j] += 1                  # rows: true class, columns: predicted
    cm = confusion_matrix(p, t, k)
    assert cm.shape == (k, k)
    np.testing.assert_array_equal(cm, ref)


def test_confusion_matrix_errors():
    with pytest.raises(ValueError, match="3"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)
    with pytest.raises(TypeError):
        confusion_matrix(np.array([0.0]), np.array([0]), 3)


# --- the Trainer ------------------------------------------------------------------------------------

def test_train_step_is_one_sgd_step_on_the_loss():
    "Linear regression, MSE, plain SGD: the update is w -= lr · 2/N · (Xw + b - y)ᵀX, by hand."
    manual_seed(0)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 1))
    model = Linear(3, 1).astype(np.float64)
    model.bias.data = np.array([0.3])
    W, b = model.weight.data.copy(), model.bias.data.copy()
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), MSELoss())
    value, counted = trainer.train_step(Tensor(X), y)
    residual = X @ W.T + b - y
    assert value == pytest.approx(float((residual ** 2).mean()))
    assert counted is None                                              # regression: no accuracy
    np.testing.assert_allclose(model.weight.data, W - 0.1 * 2 / 8 * residual.T @ X, rtol=1e-10)
    np.testing.assert_allclose(model.bias.data, b - 0.1 * 2 / 8 * residual.sum(0), rtol=1e-10)


def test_train_step_for_classification_counts_correct_predictions():
    manual_seed(1)
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((6, 4)), rng.integers(0, 3, 6)
    model = Linear(4, 3).astype(np.float64)
    W, b = model.weight.data.copy(), model.bias.data.copy()
    trainer = Trainer(model, SGD(model.parameters(), lr=0.5), CrossEntropyLoss())
    value, counted = trainer.train_step(Tensor(X), y)
    z = X @ W.T + b
    assert value == pytest.approx(ce_ref(z, y))
    assert counted == (int((z.argmax(1) == y).sum()), 6)
    dz = (np.exp(log_softmax_ref(z)) - np.eye(3)[y]) / 6
    np.testing.assert_allclose(model.weight.data, W - 0.5 * dz.T @ X, rtol=1e-10)
    np.testing.assert_allclose(model.bias.data, b - 0.5 * dz.sum(0), rtol=1e-10)


def test_train_step_clips_the_gradient_norm():
    manual_seed(0)
    model = Linear(2, 1)
    before = [p.data.copy() for p in model.parameters()]
    x = np.random.default_rng(0).standard_normal((32, 2)).astype(np.float32)
    Trainer(model, SGD(model.parameters(), lr=1.0), MSELoss(), clip_norm=0.01).train_step(Tensor(x * 100), x[:, :1] * 1e4)
    moved = math.sqrt(sum(((p.data - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert moved == pytest.approx(0.01, rel=1e-3)


def test_a_nan_loss_stops_training_before_the_update():
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((128, 2)).astype(np.float32)
    xs[40, 1] = np.nan                                     # row 40 is in batch 2 of 4
    model = Linear(2, 1)
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), MSELoss())
    with pytest.raises(FloatingPointError, match="nan"):
        trainer.fit(DataLoader(TensorDataset(xs, xs[:, :1]), 32), epochs=2)
    assert np.all(np.isfinite(model.weight.data))


def test_fit_learns_the_digits():
    manual_seed(0)
    train = DataLoader(Digits(train=True), 64, shuffle=True, seed=0)
    test = DataLoader(Digits(train=False), 256)
    model = Sequential(Flatten(), MLP(64, [64], 10))
    opt = Adam(model.parameters(), lr=3e-3)
    trainer = Trainer(model, opt, CrossEntropyLoss(), scheduler=StepLR(opt, step_size=3, gamma=0.5), verbose=False)
    history = trainer.fit(train, test, epochs=6)
    assert history["epoch"] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(history["lr"], [3e-3] * 3 + [1.5e-3] * 3)
    assert history["train_loss"][-1] < history["train_loss"][0] / 3, history["train_loss"]
    assert history["val_acc"][-1] > 0.9, history["val_acc"]
    final = trainer.evaluate(test)
    assert final["loss"] == pytest.approx(history["val_loss"][-1])
    outputs, targets = trainer.predict(test)
    assert outputs.shape == (len(Digits(train=False)), 10)
    assert accuracy(outputs, targets) == pytest.approx(final["acc"])
    cm = confusion_matrix(outputs.argmax(1), targets, 10)
    assert cm.sum() == len(targets) and np.trace(cm) / cm.sum() == pytest.approx(final["acc"])


def test_fit_regression_converges_to_the_true_weights():
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((64, 3)).astype(np.float32)
    loader = DataLoader(TensorDataset(xs, xs @ np.array([[1.0], [-2.0], [0.5]], np.float32)), 16)
    manual_seed(0)
    model = Linear(3, 1)
    history = Trainer(model, SGD(model.parameters(), lr=0.1), MSELoss()).fit(loader, loader, epochs=30)
    assert history["train_acc"][-1] is None
    assert history["val_loss"][-1] < 1e-4
    np.testing.assert_allclose(model.weight.data.ravel(), [1.0, -2.0, 0.5], atol=1e-2)


def test_early_stopping_restores_the_best_weights():
    rng = np.random.default_rng(4)
    xs = rng.standard_normal((128, 2)).astype(np.float32)
    train = DataLoader(TensorDataset(xs, xs[:, :1] * 3), 32)
    val = DataLoader(TensorDataset(xs, -xs[:, :1] * 3), 128)          # learning the task hurts here
    manual_seed(0)
    model = Linear(2, 1)
    trainer = Trainer(model, SGD(model.parameters(), lr=0.05), MSELoss())
    history = trainer.fit(train, val, epochs=20, early_stopping_patience=2)
    assert trainer.stopped_early
    assert len(history["epoch"]) < 20
    assert trainer.evaluate(val)["loss"] == pytest.approx(min(history["val_loss"]), rel=1e-5)


def test_a_step_scheduler_advances_every_batch():
    xs = np.random.default_rng(5).standard_normal((128, 2)).astype(np.float32)
    loader = DataLoader(TensorDataset(xs, xs[:, :1]), 32)                 # 4 batches per epoch
    model = Linear(2, 1)
    opt = SGD(model.parameters(), lr=0.1)
    sched = CosineWarmupLR(opt, warmup_steps=2, total_steps=8)
    Trainer(model, opt, MSELoss(), scheduler=sched).fit(loader, epochs=2)
    assert sched.last_step == 8
    assert opt.lr == pytest.approx(0.0)


def test_trainer_rejects_bad_arguments():
    model = Linear(2, 1)
    opt = SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError):
        Trainer(model, [1], MSELoss())
    with pytest.raises(ValueError):
        Trainer(model, opt, MSELoss(), clip_norm=-1)
    trainer = Trainer(model, opt, MSELoss())
    with pytest.raises(ValueError):
        trainer.fit([(Tensor(np.ones((1, 2))), np.ones((1, 1)))], epochs=0)
    with pytest.raises(TypeError):
        trainer.fit([np.ones((4, 2))], epochs=1)


# --- checkpoints ------------------------------------------------------------------------------------

def small_model(seed):
    manual_seed(seed)
    return Sequential(Flatten(), MLP(64, [16], 10))


def test_checkpoint_round_trip_with_optimizer_state(tmp_path):
    model, x = small_model(0), Tensor(np.random.default_rng(0).random((5, 1, 8, 8)).astype(np.float32))
    y = np.array([0, 1, 2, 3, 4])
    opt = Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad(); CrossEntropyLoss()(model(x), y).backward(); opt.step()
    path = tmp_path / "ckpt" / "digits.npz"
    save_checkpoint(path, model, opt, epoch=3, val_acc=0.875, note="MLP 64-16-10")
    assert sorted(p.name for p in path.parent.iterdir()) == ["digits.npz"]      # no temp file left
    with np.load(path, allow_pickle=False) as f:                                # loads without pickle
        assert len(f.files) > 0
    model2 = small_model(1)
    opt2 = Adam(model2.parameters(), lr=1.0)
    assert not np.array_equal(model2(x).data, model(x).data)
    meta = load_checkpoint(path, model2, opt2)
    assert meta == {"epoch": 3, "val_acc": 0.875, "note": "MLP 64-16-10"}
    np.testing.assert_array_equal(model2(x).data, model(x).data)
    for m, o in ((model, opt), (model2, opt2)):                                # one more identical step
        o.zero_grad(); CrossEntropyLoss()(m(x), y).backward(); o.step()
    np.testing.assert_array_equal(model2(x).data, model(x).data)


def test_checkpoint_load_errors(tmp_path):
    model = small_model(0)
    path = tmp_path / "m.npz"
    save_checkpoint(path, model)
    with pytest.raises(ValueError, match=r"\(16,\)"):
        load_checkpoint(path, Sequential(Flatten(), MLP(64, [32], 10)))        # a different width
    with pytest.raises(ValueError):
        load_checkpoint(path, Sequential(Flatten(), MLP(64, [16, 16], 10)))   # extra layers
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.npz", model)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="junk.npz"):
        load_checkpoint(junk, model)
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **{"model/0": np.array([{"a": 1}], dtype=object)})
    with pytest.raises(ValueError):
        load_checkpoint(pickled, model)
    truncated = tmp_path / "cut.npz"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError):
        load_checkpoint(truncated, model)


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    model = small_model(0)
    path = tmp_path / "m.npz"
    save_checkpoint(path, model, epoch=1)
    before = path.read_bytes()
    with pytest.raises(TypeError):
        save_checkpoint(path, small_model(1), epoch={"not": "an array"})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.npz"]
    assert zipfile.is_zipfile(path) and load_checkpoint(path, small_model(2)) == {"epoch": 1}


# --- the course's Fashion-MNIST CNN (built, not trained) --------------------------------------------

def test_fashion_cnn_architecture():
    manual_seed(0)
    model = fashion_cnn()
    out = model(Tensor(np.random.default_rng(0).random((2, 1, 28, 28)).astype(np.float32)))
    assert out.shape == (2, 10)
    conv1, bn1 = 24 * 1 * 9 + 24, 2 * 24
    conv2, bn2 = 48 * 24 * 9 + 48, 2 * 48
    fc1, fc2 = 48 * 7 * 7 * 128 + 128, 128 * 10 + 10
    assert count_parameters(model) == conv1 + bn1 + conv2 + bn2 + fc1 + fc2
    assert isinstance(model[-2], ReLU) and isinstance(model[-1], Linear)
