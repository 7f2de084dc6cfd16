"""Issue 11, defects 1, 2, 3, 6 and 9: NaN never poisons a model, loads are all or nothing, Ctrl-C leaves
a resumable state, and numeric settings that lead straight to NaN are refused.

Each test (except the ones marked as regression guards) failed on the code before the fix: this file
was run against a copy of the package from before the change.
"""
import contextlib
import io
import math

import numpy as np
import pytest

from tinytorch.tensor import Tensor, manual_seed
from tinytorch.layers import Linear
from tinytorch.dense import Sequential
from tinytorch.spatial import BatchNorm2d, Flatten
from tinytorch.attention import LayerNorm
from tinytorch.dataloader import DataLoader, TensorDataset
from tinytorch.optimizers import SGD, Adam, AdamW, StepLR, CosineWarmupLR, clip_grad_norm
from tinytorch.training import Trainer, MSELoss, save_checkpoint, load_checkpoint


def xy(n=64, seed=0, nan_row=None):
    x = np.random.default_rng(seed).standard_normal((n, 2)).astype(np.float32)
    y = x[:, :1] * 3
    if nan_row is not None:
        x = x.copy(); x[nan_row, 1] = np.nan
    return x, y


def bn_model():
    return Sequential(lambda t: t.reshape(-1, 2, 1, 1), BatchNorm2d(2), Flatten(), Linear(2, 1))


# ---------------------------------------------------------------- 1. batch norm and a NaN batch

def test_nan_batch_does_not_poison_batchnorm_running_statistics():
    bn = BatchNorm2d(3)
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2)).astype(np.float32)
    bn(Tensor(x))
    mean, var = bn.running_mean.copy(), bn.running_var.copy()
    bad = x.copy(); bad[1, 2, 0, 1] = np.nan
    bn(Tensor(bad))
    np.testing.assert_array_equal(bn.running_mean, mean)       # used to become NaN for good
    np.testing.assert_array_equal(bn.running_var, var)
    bn.eval()
    assert np.isfinite(bn(Tensor(x)).numpy()).all()


def test_trainer_nan_stop_leaves_a_model_that_still_predicts():
    manual_seed(0)
    model = bn_model()
    x, y = xy(nan_row=20)
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), MSELoss())
    with pytest.raises(FloatingPointError, match="loss became nan at epoch 1, step 2 of 4"):
        trainer.fit(DataLoader(TensorDataset(x, y), 16))
    model.eval()
    assert np.isfinite(model(Tensor(xy()[0])).numpy()).all()   # used to be NaN everywhere in eval mode


# ---------------------------------------------------------------- 2. NaN guard: gradients, clipping, validation

def test_finite_loss_with_nan_gradient_stops_before_the_step():
    manual_seed(0)
    model = Linear(2, 1)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    x, y = xy()
    sqrt_at_zero = lambda out, target: (out - out).sqrt().mean()      # loss 0, gradient NaN
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), sqrt_at_zero)
    with pytest.raises(FloatingPointError, match=r"gradient of 'weight' \(shape \(1, 2\)\) holds NaN at epoch 1, step 1 of 4"):
        trainer.fit(DataLoader(TensorDataset(x, y), 16))
    for k, v in model.state_dict().items():                           # used to be NaN after one step
        np.testing.assert_array_equal(v, before[k])


def test_inf_gradient_is_named_too():
    model = Linear(2, 1)
    pinned = Tensor(model.bias.numpy().copy())
    loss = lambda out, t: ((model.bias - pinned) ** 0.5).sum() + (out * 0).sum()   # 0, but d sqrt/dx at 0 is inf
    trainer = Trainer(model, SGD(model.parameters(), lr=0.1), loss)
    x, y = xy(16)
    with pytest.raises(FloatingPointError, match=r"gradient of 'bias' \(shape \(1,\)\) holds inf at epoch 1, step 1 of 1"):
        trainer.fit(DataLoader(TensorDataset(x, y), 16))
    np.testing.assert_array_equal(model.bias.numpy(), pinned.numpy())              # used to become -inf


def test_clip_grad_norm_never_turns_inf_into_nan():
    a, b = Tensor([0.0, 0.0], requires_grad=True), Tensor([0.0], requires_grad=True)
    a.grad, b.grad = Tensor([np.inf, 1.0]), Tensor([2.0])
    assert clip_grad_norm([a, b], 1.0) == math.inf
    assert not np.isnan(a.grad.numpy()).any() and not np.isnan(b.grad.numpy()).any()   # used to be [nan, 0] and [0]
    with pytest.raises(FloatingPointError, match="parameter 0"):
        clip_grad_norm([a, b], 1.0, error_if_nonfinite=True)


def test_clip_grad_norm_measures_huge_finite_gradients_in_float64():
    a = Tensor([0.0, 0.0], requires_grad=True)
    a.grad = Tensor(np.array([1e25, 1e25], np.float32))       # the float32 square overflows
    norm = clip_grad_norm([a], 1.0)
    assert math.isclose(norm, math.sqrt(2) * 1e25, rel_tol=1e-5)
    np.testing.assert_allclose(a.grad.numpy(), [2 ** -0.5] * 2, rtol=1e-5)   # used to stay 1e25 (norm inf: not clipped)


def test_nan_validation_loss_does_not_trigger_early_stopping():
    manual_seed(0)
    model = Linear(2, 1)
    x, y = xy()
    xv = x.copy(); xv[5, 0] = np.nan
    trainer = Trainer(model, SGD(model.parameters(), lr=0.05), MSELoss())
    with pytest.raises(FloatingPointError, match="validation loss became nan after epoch 1"):
        trainer.fit(DataLoader(TensorDataset(x, y), 16), DataLoader(TensorDataset(xv, y), 64), epochs=5,
                    early_stopping_patience=1)                # used to stop "early" after epoch 2, silently
    assert not trainer.stopped_early and trainer.epoch == 1 and trainer.history['epoch'] == [1]


# ---------------------------------------------------------------- 3. load_checkpoint is all or nothing

@pytest.fixture
def checkpoint(tmp_path):
    manual_seed(0)
    model = Sequential(Linear(2, 4), Linear(4, 1))
    opt = Adam(model.parameters(), lr=0.01)
    x, y = xy()
    Trainer(model, opt, MSELoss()).fit(DataLoader(TensorDataset(x, y), 16))
    path = save_checkpoint(tmp_path / 'ck.npz', model, opt, epoch=1)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    manual_seed(1)
    fresh = Sequential(Linear(2, 4), Linear(4, 1))
    fresh_opt = Adam(fresh.parameters(), lr=0.5)
    return tmp_path, arrays, fresh, fresh_opt


@pytest.mark.parametrize('key, value, message', [
    ('model/1.bias', np.array(['x']), 'not numbers'),
    ('model/1.weight', np.full((1, 4), np.nan, np.float32), 'NaN or inf'),
    ('optimizer/lr', np.array(-0.1), 'lr must be >= 0.0'),
    ('optimizer/exp_avg_sq.3', np.array([np.inf], np.float32), 'NaN or inf'),
    ('optimizer/steps', np.array([1, 1, 1], np.int64), 'state is for 3 parameters'),
])
def test_load_checkpoint_changes_nothing_when_any_entry_is_bad(checkpoint, key, value, message):
    tmp_path, arrays, model, opt = checkpoint
    before_model, before_opt = model.state_dict(), opt.state_dict()
    np.savez(tmp_path / 'bad.npz', **{**arrays, key: value})
    with pytest.raises((ValueError, TypeError, KeyError), match=message):
        load_checkpoint(tmp_path / 'bad.npz', model, opt)
    for k, v in model.state_dict().items():                   # used to be half-loaded
        np.testing.assert_array_equal(v, before_model[k])
    for k, v in opt.state_dict().items():                     # the optimizer used to be replaced first
        np.testing.assert_array_equal(v, before_opt[k])
    assert opt.lr == 0.5


def test_load_checkpoint_good_file_still_loads(checkpoint):            # regression guard
    tmp_path, arrays, model, opt = checkpoint
    meta = load_checkpoint(tmp_path / 'ck.npz', model, opt)
    assert meta == {'epoch': 1} and opt.lr == pytest.approx(0.01)
    np.testing.assert_array_equal(model.state_dict()['1.weight'], arrays['model/1.weight'])


# ---------------------------------------------------------------- 6. Ctrl-C in Trainer.fit

class CtrlC:
    "A loader that raises KeyboardInterrupt before its `at`-th batch overall."
    def __init__(self, loader, at): self.loader, self.at, self.seen = loader, at, 0
    def __len__(self): return len(self.loader)
    def __iter__(self):
        for batch in self.loader:
            self.seen += 1
            if self.seen == self.at: raise KeyboardInterrupt
            yield batch


def test_ctrl_c_leaves_a_consistent_resumable_state():
    manual_seed(0)
    model = Linear(2, 1)
    x, y = xy()
    train = DataLoader(TensorDataset(x, y), 16)
    val = DataLoader(TensorDataset(x, -y), 64)                # validation gets worse as training improves
    trainer = Trainer(model, SGD(model.parameters(), lr=0.05), MSELoss(), verbose=True)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(KeyboardInterrupt):
        trainer.fit(CtrlC(train, at=11), val, epochs=5, early_stopping_patience=3)   # batch 3 of epoch 3
    assert trainer.interrupted
    assert trainer.epoch == 2 == len(trainer.history['epoch'])                # used to be epoch 3, history of 2
    assert err.getvalue().endswith('\n') and 'interrupted' in err.getvalue()  # the bar's line is finished
    # early stopping's best weights are back (the first epoch is the best on this validation set)
    assert trainer.evaluate(val)['loss'] == pytest.approx(min(trainer.history['val_loss']), rel=1e-6)
    with contextlib.redirect_stderr(io.StringIO()):
        trainer.fit(train, val, epochs=2)
    assert trainer.history['epoch'] == [1, 2, 3, 4] and trainer.epoch == 4   # used to be [1, 2, 4, 5]


def test_error_inside_an_epoch_closes_the_bar_line():
    model = Linear(2, 1)
    x, y = xy(nan_row=3)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(FloatingPointError):
        Trainer(model, SGD(model.parameters(), lr=0.1), MSELoss(), verbose=True).fit(DataLoader(TensorDataset(x, y), 16))
    assert err.getvalue().endswith('\n')


# ---------------------------------------------------------------- 9. numeric settings that lead to NaN

@pytest.mark.parametrize('make, message', [
    (lambda: LayerNorm(4, eps=0), 'eps must be a finite number > 0'),            # 0/0 on a constant row
    (lambda: LayerNorm(4, eps=-1e-5), 'eps must be a finite number > 0'),
    (lambda: Adam([Tensor([1.0], requires_grad=True)], eps=0), 'eps must be > 0.0'),
    (lambda: AdamW([Tensor([1.0], requires_grad=True)], eps=0.0), 'eps must be > 0.0'),
    (lambda: SGD([Tensor([1.0], requires_grad=True)], lr=0.1, momentum=1.0), r'momentum must be in \[0.0, 1.0\)'),
    (lambda: SGD([Tensor([1.0], requires_grad=True)], lr=0.1, momentum=1.5), r'momentum must be in \[0.0, 1.0\)'),
    (lambda: BatchNorm2d(2, eps=float('nan')), 'eps must be a finite number > 0'),
])
def test_settings_that_lead_to_nan_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_layernorm_eps_zero_would_have_made_nan():               # why the check matters
    ln = LayerNorm(4, eps=1e-12)
    assert np.isfinite(ln(Tensor(np.full((1, 4), 2.0, np.float32))).numpy()).all()


@pytest.mark.parametrize('key, value, message', [
    ('lr', -0.1, 'lr must be >= 0.0'), ('lr', np.nan, "'lr' holds NaN"),
    ('betas', (-0.1, 0.999), r'beta1 must be in \[0.0, 1.0\)'), ('betas', (0.9, 1.0), r'beta2 must be in \[0.0, 1.0\)'),
    ('eps', 0.0, 'eps must be > 0.0'), ('weight_decay', -1.0, 'weight_decay must be >= 0.0'),
])
def test_adam_load_state_dict_refuses_bad_hyperparameters_and_changes_nothing(key, value, message):
    p = Tensor([1.0, 2.0], requires_grad=True)
    opt = Adam([p], lr=0.01)
    p.grad = Tensor([0.1, 0.2]); opt.step()
    sd, before = opt.state_dict(), opt.state_dict()
    sd[key] = np.array(value)
    with pytest.raises((ValueError, TypeError), match=message):
        opt.load_state_dict(sd)
    for k, v in opt.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_sgd_load_state_dict_refuses_momentum_one():
    p = Tensor([1.0], requires_grad=True)
    opt = SGD([p], lr=0.1, momentum=0.9)
    sd = opt.state_dict(); sd['momentum'] = np.array(1.0)
    with pytest.raises(ValueError, match='momentum'):
        opt.load_state_dict(sd)
    assert opt.momentum == 0.9


@pytest.mark.parametrize('make', [lambda o: StepLR(o, 2, 0.5), lambda o: CosineWarmupLR(o, 2, 10)])
def test_scheduler_load_state_dict_refuses_negative_rates(make):
    opt = SGD([Tensor([1.0], requires_grad=True)], lr=0.1)
    sched = make(opt)
    lr = opt.lr
    with pytest.raises(ValueError, match='base_lr must be >= 0.0'):
        sched.load_state_dict({'base_lr': np.array(-1.0), 'last_step': np.array(0)})   # used to set lr = -1
    with pytest.raises(ValueError, match='last_step must be an int >= 0'):
        sched.load_state_dict({'base_lr': np.array(0.1), 'last_step': np.array(-4)})
    assert opt.lr == lr and sched.base_lr == 0.1 and sched.last_step == 0
