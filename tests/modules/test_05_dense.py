"""Protected tests for module 05 (Dense): Sequential, MLP, parameter counts and the model summary.

Run against the exported package; imports modules 02-05 only (forward passes, no backward).
References: the same network evaluated layer by layer in NumPy, and parameter counts by hand.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinytorch.tensor import Tensor, manual_seed
from tinytorch.activations import ReLU, Tanh, Sigmoid
from tinytorch.layers import Dropout, Linear, Module
from tinytorch.dense import MLP, Sequential, count_parameters, summary

checks = settings(max_examples=25, deadline=None, derandomize=True, database=None)


def rand(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def linear_ref(layer, x):
    out = x.astype(np.float64) @ layer.weight.data.T.astype(np.float64)
    return out if layer.bias is None else out + layer.bias.data


def randomise_biases(model, seed):
    "The zero init of biases would hide a layer that forgets them."
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if name.endswith("bias"): p.data = rng.standard_normal(p.shape).astype(np.float32)


# --- Sequential -------------------------------------------------------------------------------------

def test_sequential_applies_layers_in_order():
    double, plus_one = (lambda t: t * 2.0), (lambda t: t + 1.0)
    x = Tensor(np.array([1.0, 2.0], np.float32))
    np.testing.assert_array_equal(Sequential(double, plus_one)(x).data, [3.0, 5.0])
    np.testing.assert_array_equal(Sequential(plus_one, double)(x).data, [4.0, 6.0])
    np.testing.assert_array_equal(Sequential()(x).data, x.data)          # empty: identity


def test_sequential_of_modules_activations_and_functions_matches_numpy():
    manual_seed(0)
    l1, l2 = Linear(4, 6), Linear(6, 3)
    model = Sequential(l1, ReLU(), lambda t: t * 0.5, l2, Tanh())
    randomise_biases(model, 1)
    x = rand((5, 4), 2)
    h = np.maximum(linear_ref(l1, x), 0) * 0.5
    want = np.tanh(linear_ref(l2, h))
    out = model(Tensor(x))
    assert out.shape == (5, 3)
    np.testing.assert_allclose(out.data, want, rtol=1e-5, atol=1e-5)


def test_sequential_container_api():
    l1, l2 = Linear(2, 3), Linear(3, 1)
    model = Sequential(l1, ReLU(), l2)
    assert len(model) == 3 and model[0] is l1 and model[-1] is l2
    assert isinstance(model[1:], Sequential) and len(model[1:]) == 2
    assert list(model) == model.layers
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    model.append(Sigmoid())
    assert len(model) == 4


def test_sequential_in_a_module_registers_its_parameters():
    class Wrapper(Module):
        def __init__(self):
            self.body = Sequential(Linear(2, 3), ReLU(), Linear(3, 2))
        def forward(self, x): return self.body(x)
    assert [n for n, _ in Wrapper().named_parameters()] == ["body.0.weight", "body.0.bias", "body.2.weight", "body.2.bias"]


def test_sequential_rejects_non_callables():
    with pytest.raises(TypeError):
        Sequential([Linear(2, 2), ReLU()])          # a list instead of separate arguments
    with pytest.raises(TypeError):
        Sequential(Linear(2, 2), 42)


# --- MLP --------------------------------------------------------------------------------------------

def mlp_ref(model, x, act=lambda h: np.maximum(h, 0)):
    "Evaluate an MLP from its Linear layers in NumPy."
    linears = [l for l in model.layers if isinstance(l, Linear)]
    h = x
    for i, lin in enumerate(linears):
        h = linear_ref(lin, h)
        if i < len(linears) - 1: h = act(h)
    return h


def test_mlp_structure():
    model = MLP(4, [8, 6], 3)
    kinds = [type(l).__name__ for l in model.layers]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Linear"]
    shapes = [l.weight.shape for l in model.layers if isinstance(l, Linear)]
    assert shapes == [(8, 4), (6, 8), (3, 6)]


def test_mlp_with_one_int_hidden_size_and_no_hidden_layer():
    assert [l.weight.shape for l in MLP(5, 7, 2).layers if isinstance(l, Linear)] == [(7, 5), (2, 7)]
    direct = MLP(5, [], 2)
    assert [type(l).__name__ for l in direct.layers] == ["Linear"]


def test_mlp_dropout_follows_each_hidden_activation():
    model = MLP(4, [8, 6], 3, dropout=0.25)
    kinds = [type(l).__name__ for l in model.layers]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert all(l.p == 0.25 for l in model.layers if isinstance(l, Dropout))


def test_mlp_activation_argument():
    model = MLP(3, [4, 4], 2, activation=Tanh)
    acts = [l for l in model.layers if not isinstance(l, Linear)]
    assert len(acts) == 2 and all(isinstance(a, Tanh) for a in acts)
    assert acts[0] is not acts[1]                   # a class gives a fresh activation per layer


@checks
@given(sizes=st.lists(st.integers(1, 7), min_size=2, max_size=5), batch=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_mlp_forward_matches_numpy(sizes, batch, seed):
    manual_seed(seed)
    model = MLP(sizes[0], sizes[1:-1], sizes[-1])
    randomise_biases(model, seed)
    x = rand((batch, sizes[0]), seed + 1)
    out = model(Tensor(x))
    assert out.shape == (batch, sizes[-1])
    np.testing.assert_allclose(out.data, mlp_ref(model, x), rtol=1e-4, atol=1e-5)


def test_mlp_with_dropout_is_deterministic_in_eval_mode():
    manual_seed(0)
    model = MLP(6, [16], 2, dropout=0.5)
    randomise_biases(model, 0)
    x = rand((8, 6), 3)
    model.eval()
    np.testing.assert_allclose(model(Tensor(x)).data, mlp_ref(model, x), rtol=1e-5, atol=1e-5)
    model.train()
    assert not np.allclose(model(Tensor(x)).data, mlp_ref(model, x), atol=1e-5)


def test_mlp_rejects_bad_sizes_and_inputs():
    for bad in [dict(in_features=0), dict(hidden_sizes=[4, -1]), dict(out_features=2.5)]:
        with pytest.raises(ValueError):
            MLP(**{"in_features": 3, "hidden_sizes": [4], "out_features": 2, **bad})
    with pytest.raises(ValueError):
        MLP(3, [4], 2, dropout=1.5)
    with pytest.raises(ValueError, match=r"\(2, 5\)"):
        MLP(3, [4], 2)(Tensor(np.ones((2, 5), np.float32)))


# --- parameter counts and summary -------------------------------------------------------------------

def test_count_parameters_by_hand():
    assert count_parameters(MLP(4, [8, 6], 3)) == (4 * 8 + 8) + (8 * 6 + 6) + (6 * 3 + 3)
    assert count_parameters(MLP(784, [128], 10)) == 784 * 128 + 128 + 128 * 10 + 10
    assert count_parameters(Linear(5, 2, bias=False)) == 10


def test_count_parameters_counts_a_shared_layer_once():
    shared = Linear(4, 4)
    assert count_parameters(Sequential(shared, ReLU(), shared)) == 20
    with pytest.raises(TypeError):
        count_parameters([Linear(2, 2)])


def test_summary_rows_shapes_and_total():
    model = MLP(4, [8, 6], 3)
    s = summary(model, (2, 4))
    assert [r.output_shape for r in s.rows] == [(2, 8), (2, 8), (2, 6), (2, 6), (2, 3)]
    assert [r.params for r in s.rows] == [40, 0, 54, 0, 21]
    assert s.total_params == 115 and s.output_shape == (2, 3)
    text = repr(s)
    assert "115" in text and "(2, 3)" in text


def test_summary_restores_training_mode_and_rejects_bad_shapes():
    model = MLP(4, [8], 3, dropout=0.5)
    model.train()
    summary(model, (1, 4))
    assert all(m.training for m in model.modules())
    with pytest.raises(ValueError):
        summary(model, (0, 4))
