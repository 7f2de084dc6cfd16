"""Protected tests for module 04 (Layers): Module bookkeeping (parameters, state dicts, train/eval),
Kaiming and Xavier initialisation, Linear and Dropout.

Run against the exported package; imports modules 02-04 only (forward passes, no backward).
References: NumPy matmuls, the initialisers' variance formulas checked statistically on large
samples, and hand-built module trees.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinytorch.tensor import Tensor, manual_seed
from tinytorch.activations import ReLU
from tinytorch.layers import Dropout, Linear, Module, ModuleList, Parameter, kaiming_uniform, xavier_uniform

checks = settings(max_examples=25, deadline=None, derandomize=True, database=None)
seeds = st.integers(0, 2**32 - 1)


def rand(shape, seed, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# --- Parameter and Module bookkeeping ---------------------------------------------------------------

def test_parameter_is_a_tensor_that_wants_a_gradient():
    p = Parameter(np.ones((2, 3), np.float32))
    assert isinstance(p, Tensor) and p.requires_grad and p.shape == (2, 3)


class Block(Module):
    def __init__(self, seed):
        self.fc = Linear(3, 4)
        self.scale = Parameter(np.full(4, 2.0, np.float32))
        self.act = ReLU()
        self.note = "not a parameter"
        self.constant = Tensor(np.ones(4, np.float32))      # a plain tensor is not trained


class Net(Module):
    def __init__(self):
        self.first = Block(0)
        self.blocks = [Block(1), Block(2)]
        self.heads = {"a": Linear(4, 2), "b": Linear(4, 1, bias=False)}
        self.shared = self.first.scale                    # the same Parameter under two names


def test_named_parameters_walks_attributes_lists_and_dicts():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    shared_name = [n for n, p in net.named_parameters() if p is net.shared]
    assert len(shared_name) == 1 and shared_name[0] in ("shared", "first.scale")   # once, under either name
    assert sorted(n for n in names if n != shared_name[0]) == sorted([
        "first.fc.weight", "first.fc.bias",
        "blocks.0.fc.weight", "blocks.0.fc.bias", "blocks.0.scale",
        "blocks.1.fc.weight", "blocks.1.fc.bias", "blocks.1.scale",
        "heads.a.weight", "heads.a.bias", "heads.b.weight"])
    params = list(net.parameters())
    assert len(params) == len(names) == len({id(p) for p in params})     # the shared one counted once
    assert all(isinstance(p, Parameter) for p in params)
    assert dict(net.named_parameters())["first.fc.weight"] is net.first.fc.weight


def test_named_parameters_of_a_linear():
    lin = Linear(5, 3)
    assert [(n, p.shape) for n, p in lin.named_parameters()] == [("weight", (3, 5)), ("bias", (3,))]
    assert [n for n, _ in Linear(5, 3, bias=False).named_parameters()] == ["weight"]


def test_module_list_registers_its_items():
    ml = ModuleList([Linear(2, 2), Linear(2, 3)])
    assert [n for n, _ in ml.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert len(ml) == 2 and ml[1].out_features == 3
    with pytest.raises(TypeError):
        ModuleList([Linear(2, 2), "not a module"])


def test_train_and_eval_reach_every_submodule():
    net = Net()
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_zero_grad_forgets_every_gradient():
    net = Net()
    for p in net.parameters(): p.grad = Tensor(np.ones(p.shape, np.float32))
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_state_dict_round_trip_copies_values():
    manual_seed(0); a = Net()
    manual_seed(1); b = Net()
    sd = a.state_dict()
    assert set(sd) == {n for n, _ in a.named_parameters()}
    b.load_state_dict(sd)
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb
        np.testing.assert_array_equal(pa.data, pb.data)
    sd["first.fc.weight"][...] = 99.0                      # a state dict holds copies
    assert not np.any(a.first.fc.weight.data == 99.0)


def test_load_state_dict_errors_name_the_keys_and_shapes():
    lin = Linear(3, 2)
    with pytest.raises(ValueError, match="bias"):
        lin.load_state_dict({"weight": np.zeros((2, 3))})
    with pytest.raises(ValueError, match="extra"):
        lin.load_state_dict({**lin.state_dict(), "extra": np.zeros(1)})
    with pytest.raises(ValueError) as e:
        lin.load_state_dict({"weight": np.zeros((3, 3)), "bias": np.zeros(2)})
    assert "(2, 3)" in str(e.value) and "(3, 3)" in str(e.value)


def test_module_without_forward_says_so():
    with pytest.raises(NotImplementedError):
        Module()(Tensor(np.ones(2)))


# --- initialisers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fan_in", [1, 16, 300])
def test_kaiming_uniform_bound_and_variance(fan_in):
    manual_seed(0)
    w = kaiming_uniform((400, 250), fan_in=fan_in)
    bound = math.sqrt(2.0) * math.sqrt(3.0 / fan_in)
    assert w.shape == (400, 250) and w.dtype == np.float32
    assert np.abs(w).max() <= bound * (1 + 1e-6)
    assert np.abs(w).max() > 0.99 * bound                    # the whole interval is used
    assert w.var() == pytest.approx(2.0 / fan_in, rel=0.03)  # uniform on ±b has variance b²/3
    assert abs(w.mean()) < 0.01 * bound


def test_kaiming_uniform_gain():
    manual_seed(0)
    w = kaiming_uniform((500, 200), fan_in=50, gain=1.0)
    assert w.var() == pytest.approx(1.0 / 50, rel=0.03)


@pytest.mark.parametrize("fan_in, fan_out", [(10, 10), (300, 20), (1, 1000)])
def test_xavier_uniform_bound_and_variance(fan_in, fan_out):
    manual_seed(1)
    w = xavier_uniform((400, 250), fan_in=fan_in, fan_out=fan_out)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    assert w.shape == (400, 250) and w.dtype == np.float32
    assert np.abs(w).max() <= bound * (1 + 1e-6)
    assert np.abs(w).max() > 0.99 * bound
    assert w.var() == pytest.approx(2.0 / (fan_in + fan_out), rel=0.03)


def test_initialisers_draw_from_the_seeded_generator():
    manual_seed(5); a = kaiming_uniform((3, 4), fan_in=4); b = xavier_uniform((3, 4), 4, 3)
    manual_seed(5); c = kaiming_uniform((3, 4), fan_in=4); d = xavier_uniform((3, 4), 4, 3)
    np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(b, d)
    assert not np.array_equal(a, kaiming_uniform((3, 4), fan_in=4))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_initialisers_reject_bad_fans(bad):
    with pytest.raises(ValueError):
        kaiming_uniform((2, 2), fan_in=bad)
    with pytest.raises(ValueError):
        xavier_uniform((2, 2), fan_in=2, fan_out=bad)


# --- Linear -----------------------------------------------------------------------------------------

@checks
@given(n_in=st.integers(1, 6), n_out=st.integers(1, 6), batch=st.lists(st.integers(1, 3), min_size=0, max_size=2),
       bias=st.booleans(), seed=seeds)
def test_linear_forward_matches_numpy(n_in, n_out, batch, bias, seed):
    lin = Linear(n_in, n_out, bias=bias)
    if bias: lin.bias.data = rand(n_out, seed + 1)          # the zero init would hide a missing bias
    x = rand(tuple(batch) + (n_in,), seed)
    out = lin(Tensor(x))
    want = x.astype(np.float64) @ lin.weight.data.T.astype(np.float64)
    if bias: want = want + lin.bias.data
    assert out.shape == tuple(batch) + (n_out,)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, want, rtol=1e-5, atol=1e-5)


def test_linear_by_hand():
    lin = Linear(2, 2)
    lin.weight.data = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    lin.bias.data = np.array([10.0, 20.0], np.float32)
    np.testing.assert_array_equal(lin(Tensor([[1.0, 1.0], [0.0, -1.0]])).data, [[13.0, 27.0], [8.0, 16.0]])


def test_linear_records_the_graph_through_its_parameters():
    lin = Linear(3, 2)
    assert lin(Tensor(rand((4, 3), 0))).requires_grad


def test_linear_shapes_and_init():
    manual_seed(0)
    lin = Linear(400, 300)
    assert lin.weight.shape == (300, 400) and lin.bias.shape == (300,)
    np.testing.assert_array_equal(lin.bias.data, 0)
    assert lin.weight.data.var() == pytest.approx(2.0 / 400, rel=0.05)
    xav = Linear(400, 300, init="xavier")
    assert xav.weight.data.var() == pytest.approx(2.0 / 700, rel=0.05)


def test_linear_rejects_wrong_inputs():
    lin = Linear(3, 2)
    with pytest.raises(ValueError, match=r"\(4, 5\)"):
        lin(Tensor(np.ones((4, 5), np.float32)))
    with pytest.raises(TypeError):
        lin(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError):
        Linear(0, 2)
    with pytest.raises(ValueError):
        Linear(3, 2, init="bogus")


# --- Dropout ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_zeroes_a_fraction_p_and_rescales_the_rest(p):
    manual_seed(0)
    x = np.random.default_rng(1).uniform(1.0, 2.0, (200, 250)).astype(np.float32)
    out = Dropout(p)(Tensor(x)).data
    dropped = out == 0
    assert dropped.mean() == pytest.approx(p, abs=0.01)
    np.testing.assert_allclose(out[~dropped], x[~dropped] / (1 - p), rtol=1e-6)
    assert out.mean() == pytest.approx(x.mean(), rel=0.02)     # the expectation is preserved


def test_dropout_draws_a_fresh_mask_each_call_from_the_seeded_generator():
    x = Tensor(np.ones((50, 50), np.float32))
    d = Dropout(0.5)
    manual_seed(3); a = d(x).data
    b = d(x).data
    manual_seed(3); c = d(x).data
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, b)


def test_dropout_is_the_identity_in_eval_mode_and_for_p_zero():
    x = Tensor(rand((20, 30), 2))
    np.testing.assert_array_equal(Dropout(0.5).eval()(x).data, x.data)
    np.testing.assert_array_equal(Dropout(0.0)(x).data, x.data)


def test_dropout_keeps_the_graph():
    x = Tensor(rand((4, 4), 3), requires_grad=True)
    assert Dropout(0.5)(x).requires_grad


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, "half"])
def test_dropout_rejects_bad_p(p):
    with pytest.raises(ValueError):
        Dropout(p)
