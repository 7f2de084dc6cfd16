"""Protected tests of module 15 (MLOps), run against the exported package.

The registry is checked against hashlib and the files on disk, and with two real processes
registering at once; the monitor's Prometheus text is read back with prometheus-client's own parser
and compared with hand counts; the drift statistics are checked against brute-force ECDFs, published
tables (Kolmogorov and chi-square critical values), closed forms and simulated null distributions.
Imports only modules 01-15; no data files, runs in well under a minute.
"""
import hashlib
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tinytorch.tensor import Tensor, manual_seed
from tinytorch.layers import Linear, Module
from tinytorch.dense import Sequential
from tinytorch.activations import ReLU
from tinytorch.autograd import no_grad
from tinytorch.compression import quantize_int8
from tinytorch.mlops import (
    ModelRegistry, ModelVersion, RegistryError, ArtifactIntegrityError, dataset_hash, file_sha256, InferenceMonitor,
    kolmogorov_sf, ks_statistics, ks_2samp, chi2_sf, chi2_homogeneity, psi, psi_counts, DriftDetector,
    rotate_images, sample_batch, retrain_on_drift, holdout_accuracy)


def mlp(seed):
    manual_seed(seed)
    return Sequential(Linear(6, 8), ReLU(), Linear(8, 3)).eval()


def out(model, x):
    with no_grad():
        return model(Tensor(x)).data


X = np.random.default_rng(0).random((16, 6)).astype(np.float32)


# ---------------------------------------------------------------- registry

def test_register_promote_load_round_trip(tmp_path):
    reg = ModelRegistry(tmp_path / 'reg')
    v1 = reg.register('m', mlp(1), metrics={'acc': 0.5}, dataset_hash='d1', config={'lr': 0.1}, git_commit='c1')
    v2 = reg.register('m', mlp(2), metrics={'acc': np.float32(0.75)})
    assert (v1.version, v2.version, v1.stage, v2.stage) == (1, 2, 'staging', 'staging')
    assert v1.sha256 == hashlib.sha256(Path(v1.artifact).read_bytes()).hexdigest()
    assert (v1.metrics, v1.dataset_hash, v1.config, v1.git_commit) == ({'acc': 0.5}, 'd1', {'lr': 0.1}, 'c1')
    assert v2.metrics == {'acc': 0.75} and isinstance(v2.created_at, str)
    reg.promote('m', 1)
    assert reg.get('m', stage='production').version == 1
    reg.promote('m', 2)
    assert [(v.version, v.stage) for v in reg.versions('m')] == [(1, 'archived'), (2, 'production')]
    np.testing.assert_array_equal(out(reg.load('m'), X), out(mlp(2), X))
    np.testing.assert_array_equal(out(reg.load('m', 1), X), out(mlp(1), X))
    again = ModelRegistry(tmp_path / 'reg')                       # a new handle sees the same database
    assert again.get('m') == reg.get('m', 2) and again.names() == ['m']


def test_int8_model_and_file_artifacts(tmp_path):
    reg = ModelRegistry(tmp_path)
    q = quantize_int8(mlp(3), [X])
    v = reg.register('q', q)
    np.testing.assert_array_equal(out(reg.load('q', v.version), X), out(q, X))
    copy = reg.register('q', v.artifact)                           # registering an existing compressed file
    assert copy.sha256 == v.sha256 and copy.version == 2


def test_clear_errors_and_integrity(tmp_path):
    reg = ModelRegistry(tmp_path)
    with pytest.raises(RegistryError, match="no model named 'nope'"):
        reg.get('nope')
    v = reg.register('m', mlp(0))
    with pytest.raises(RegistryError, match="model 'm' has no version 5; it has v1 staging"):
        reg.load('m', 5)
    with pytest.raises(RegistryError, match="no version in stage 'production'"):
        reg.load('m')
    with pytest.raises(ValueError, match='stage must be one of'):
        reg.promote('m', 1, 'prod')
    with pytest.raises(ValueError, match='model name must be'):
        reg.register('../evil', mlp(0))
    with pytest.raises(ValueError, match="metric 'loss' must be a finite number"):
        reg.register('m', mlp(0), metrics={'loss': math.inf})
    with pytest.raises(TypeError, match='model must be a TinyTorch Module or the path'):
        reg.register('m', 3.14)
    art = Path(v.artifact)
    data = bytearray(art.read_bytes()); data[len(data) // 2] ^= 0xFF
    art.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match='the file changed after registration'):
        reg.load('m', 1)
    art.unlink()
    with pytest.raises(ArtifactIntegrityError, match="the artifact of 'm' v1 is missing"):
        reg.load('m', 1)
    (tmp_path / 'other').mkdir()
    (tmp_path / 'other' / 'registry.db').write_bytes(b'\x00garbage' * 200)
    with pytest.raises(ValueError, match='is not a SQLite database'):
        ModelRegistry(tmp_path / 'other')


def test_failed_registration_leaves_nothing(tmp_path):
    class Custom(Module):
        def forward(self, x): return x
    reg = ModelRegistry(tmp_path)
    reg.register('m', mlp(0))
    with pytest.raises(Exception):
        reg.register('m', Sequential(Linear(2, 2), Custom()))      # save_compressed cannot store this layer
    assert [v.version for v in reg.versions('m')] == [1]
    assert sorted(p.name for p in (tmp_path / 'artifacts' / 'm').iterdir()) == [Path(reg.get('m', 1).artifact).name]


WRITER = '''
import sys, time
from pathlib import Path
from tinytorch.mlops import ModelRegistry
from tinytorch.layers import Linear
from tinytorch.tensor import manual_seed
reg = ModelRegistry(sys.argv[1]); who = int(sys.argv[2]); go = Path(sys.argv[3])
while not go.exists(): time.sleep(0.005)
for i in range(3):
    manual_seed(100 * who + i)
    reg.register('shared', Linear(2, 2), metrics={'who': who, 'i': i}, git_commit='x')
'''


def test_two_processes_register_at_once(tmp_path):
    ModelRegistry(tmp_path)
    go = tmp_path / 'go'
    procs = [subprocess.Popen([sys.executable, '-c', WRITER, str(tmp_path), str(w), str(go)], stderr=subprocess.PIPE, text=True)
             for w in (1, 2, 3)]
    time.sleep(1.5)
    go.touch()
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errs
    reg = ModelRegistry(tmp_path)
    versions = reg.versions('shared')
    assert [v.version for v in versions] == list(range(1, 10))
    assert sorted((v.metrics['who'], v.metrics['i']) for v in versions) == [(w, i) for w in (1, 2, 3) for i in range(3)]
    for v in versions:
        manual_seed(100 * v.metrics['who'] + v.metrics['i'])
        np.testing.assert_array_equal(reg.load('shared', v.version).weight.numpy(), Linear(2, 2).weight.numpy())
    assert len({v.artifact for v in versions}) == 9


def test_dataset_hash():
    a = np.arange(12, dtype=np.int16).reshape(3, 4)
    assert dataset_hash(a) == hashlib.sha256(b'<i2(3, 4)' + a.tobytes()).hexdigest()
    assert dataset_hash(a) != dataset_hash(a.T.copy()) and dataset_hash(a, a) != dataset_hash(a)


# ---------------------------------------------------------------- monitoring

class Clock:
    def __init__(self): self.now = 0.0
    def __call__(self): return self.now


def test_monitor_counts_and_prometheus_text():
    from prometheus_client.parser import text_string_to_metric_families
    clock = Clock()
    mon = InferenceMonitor('cnn', version=7, window=10, clock=clock)
    events = [(0, 0.002, [0, 1, 1], False), (4, 0.03, [2], False), (8, 0.0005, None, True), (12, 0.2, [1, 1], False)]
    for t, lat, pred, err in events:
        clock.now = t
        mon.record(lat, samples=len(pred) if pred else 1, predictions=pred, error=err)
    clock.now = 13.0                                      # window [3, 13]: the last three requests
    snap = mon.snapshot()
    assert (snap['total']['requests'], snap['total']['samples'], snap['total']['errors']) == (4, 7, 1)
    assert list(snap['total']['class_counts']) == [1, 4, 1]
    w = snap['window']
    assert w['requests'] == 3 and abs(w['throughput'] - 4 / 10) < 1e-12 and abs(w['error_ratio'] - 1 / 3) < 1e-12
    assert (w['p50'], w['p99']) == (0.03, 0.2)
    np.testing.assert_allclose(w['class_fraction'], [0, 2 / 3, 1 / 3])
    fams = {f.name: f for f in text_string_to_metric_families(mon.prometheus_text())}
    val = lambda fam, name, **labels: next(s.value for s in fams[fam].samples
                                           if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))
    assert fams['tinytorch_requests'].type == 'counter' and fams['tinytorch_request_latency_seconds'].type == 'histogram'
    assert val('tinytorch_requests', 'tinytorch_requests_total', model='cnn', version='7') == 4
    assert val('tinytorch_errors', 'tinytorch_errors_total') == 1
    assert val('tinytorch_request_latency_seconds', 'tinytorch_request_latency_seconds_bucket', le='0.0005') == 1
    assert val('tinytorch_request_latency_seconds', 'tinytorch_request_latency_seconds_bucket', le='0.0025') == 2
    assert val('tinytorch_request_latency_seconds', 'tinytorch_request_latency_seconds_bucket', le='0.025') == 2
    assert val('tinytorch_request_latency_seconds', 'tinytorch_request_latency_seconds_bucket', le='+Inf') == 4
    assert abs(val('tinytorch_request_latency_seconds', 'tinytorch_request_latency_seconds_sum') - 0.2325) < 1e-12
    assert val('tinytorch_predictions', 'tinytorch_predictions_total', **{'class': '1'}) == 4
    assert abs(val('tinytorch_window_latency_seconds', 'tinytorch_window_latency_seconds', quantile='0.5') - 0.03) < 1e-12
    with pytest.raises(ValueError, match='latency must be a finite number'):
        mon.record(math.nan)


# ---------------------------------------------------------------- drift statistics

def test_ks_statistic_matches_brute_force_ecdfs():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.integers(0, 8, rng.integers(5, 40)).astype(float)          # ties on purpose
        b = rng.integers(0, 10, rng.integers(5, 40)).astype(float)
        grid = np.union1d(a, b)
        brute = max(abs((a <= x).mean() - (b <= x).mean()) for x in grid)
        assert abs(ks_2samp(a, b)[0] - brute) < 1e-12
    ref = rng.normal(size=(300, 4)); batch = rng.normal(size=(50, 4))
    cols = ks_statistics(np.sort(ref, axis=0), batch)
    np.testing.assert_allclose(cols, [ks_2samp(ref[:, j], batch[:, j])[0] for j in range(4)], atol=1e-12)


def test_kolmogorov_tail_against_the_table_and_calibration():
    for lam, p in [(1.0727, 0.20), (1.2238, 0.10), (1.3581, 0.05), (1.4802, 0.025), (1.6276, 0.01)]:
        assert abs(kolmogorov_sf(lam) - p) < 3e-4, (lam, kolmogorov_sf(lam))
    # small lambda: only the first term of the theta series matters
    assert kolmogorov_sf(0.3) == pytest.approx(1 - math.sqrt(2 * math.pi) / 0.3 * math.exp(-math.pi ** 2 / (8 * 0.09)), abs=1e-12)
    assert kolmogorov_sf(0.0) == 1.0
    rng = np.random.default_rng(1)
    p = np.array([ks_2samp(rng.exponential(size=200), rng.exponential(size=150))[1] for _ in range(500)])
    assert 0.025 <= (p < 0.05).mean() <= 0.08


def test_chi_square_tail_table_and_closed_form():
    for df, x, p in [(1, 3.841, 0.05), (3, 7.815, 0.05), (9, 16.919, 0.05), (9, 21.666, 0.01), (20, 31.410, 0.05)]:
        assert abs(chi2_sf(x, df) - p) < 2e-4 * max(1, p / 0.01)
    for df in (2, 6, 18):
        for x in (0.3, 5.0, 25.0, 90.0):
            closed = math.exp(-x / 2) * sum((x / 2) ** j / math.factorial(j) for j in range(df // 2))
            assert chi2_sf(x, df) == pytest.approx(closed, rel=1e-9, abs=1e-15)
    stat, p, df = chi2_homogeneity([20, 30, 50], [10, 30, 10])
    table = np.array([[20, 30, 50], [10, 30, 10]], float)
    e = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    assert df == 2 and stat == pytest.approx(((table - e) ** 2 / e).sum()) and p == pytest.approx(math.exp(-stat / 2))


def test_psi_by_hand():
    assert psi_counts([25, 25, 50], [25, 25, 50]) == 0.0
    r, b = np.array([0.2, 0.3, 0.5]), np.array([0.1, 0.3, 0.6])
    assert psi_counts(r * 100, b * 1000) == pytest.approx(((b - r) * np.log(b / r)).sum())
    assert psi(np.arange(1000.0), np.arange(1000.0)) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------- the detector

def test_detector_false_alarms_and_detections_on_gaussians():
    rng = np.random.default_rng(2)
    scales = 2.0 * 0.75 ** np.arange(12)
    ref = rng.normal(size=(1500, 12)) * scales
    det = DriftDetector(ref.reshape(-1, 3, 4), components=6, alpha=0.05)
    alarms = [det.check((rng.normal(size=(150, 12)) * scales).reshape(-1, 3, 4)) for _ in range(100)]
    assert np.mean([a.drift for a in alarms]) <= 0.10
    a = alarms[0]
    assert a.p_value == pytest.approx(min(1.0, min(p for _, p, _ in a.tests.values()) * 6))
    assert a.drift == (a.p_value < 0.05)
    shifted = [det.check((rng.normal(size=(150, 12)) * scales + np.r_[2.0, np.zeros(11)]).reshape(-1, 3, 4)) for _ in range(20)]
    assert all(s.drift for s in shifted)


def test_detector_uses_the_model_outputs():
    class Threshold(Module):
        "Class 1 when the first feature is positive."
        def forward(self, x):
            return Tensor(np.stack([-x.data[:, 0], x.data[:, 0]], axis=1))
    rng = np.random.default_rng(3)
    ref = rng.normal(size=(2000, 5)).astype(np.float32)
    det = DriftDetector(ref, model=Threshold(), components=3)
    assert set(det.check(rng.normal(size=(200, 5)).astype(np.float32)).tests) >= {'chi2:classes', 'ks:p(class 0)'}
    mixed = rng.normal(size=(200, 5)).astype(np.float32)
    mixed[:, 0] = np.abs(mixed[:, 0]) * np.where(np.arange(200) < 170, 1, -1)        # 85 % class 1 instead of 50 %
    r = det.check(mixed)
    assert r.drift and r.tests['chi2:classes'][1] < 1e-10
    with pytest.raises(ValueError, match='expected a batch of at least 2 samples of shape'):
        det.check(np.zeros((10, 4)))


def test_rotation_and_shifted_batches():
    img = np.random.default_rng(4).random((2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(rotate_images(img, 90), np.rot90(img, 1, axes=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(rotate_images(img, -90), np.rot90(img, -1, axes=(1, 2)), atol=1e-5)
    labels = np.repeat(np.arange(10), 50)
    batch, y = sample_batch(np.arange(500.0)[:, None], labels, 100, 'class_mix', np.random.default_rng(0))
    assert np.sort(np.bincount(y, minlength=10))[-3:].sum() == 50 and len(set(batch[:, 0])) == 100


def test_retrain_promotes_only_a_better_model(tmp_path):
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(500, 6)).astype(np.float32)
    x_hold = rng.normal(size=(300, 6)).astype(np.float32)
    y_hold = (x_hold[:, 0] > 0).astype(int)
    def model_with(weight_row0):
        m = Sequential(Linear(6, 2))
        m[0].weight.data[:] = 0; m[0].bias.data[:] = 0
        m[0].weight.data[1, 0] = weight_row0
        return m.eval()
    reg = ModelRegistry(tmp_path)
    reg.promote('clf', reg.register('clf', model_with(-1.0)).version)            # production is always wrong
    det = DriftDetector(ref, components=4)
    evaluate = lambda m: holdout_accuracy(m, x_hold, y_hold)
    calm = retrain_on_drift(reg, 'clf', det, rng.normal(size=(100, 6)).astype(np.float32), None, None)
    assert calm.candidate is None and len(reg.versions('clf')) == 1
    shifted = rng.normal(size=(100, 6)).astype(np.float32) + 2.0
    better = retrain_on_drift(reg, 'clf', det, shifted, lambda m: model_with(1.0), evaluate)
    assert better.promoted and (better.production_score, better.candidate_score) == (0.0, 1.0)
    assert reg.get('clf', stage='production').version == 2 and reg.get('clf', 1).stage == 'archived'
    worse = retrain_on_drift(reg, 'clf', det, shifted, lambda m: model_with(-1.0), evaluate)
    assert not worse.promoted and reg.get('clf', 3).stage == 'staging' and reg.get('clf', stage='production').version == 2
    assert reg.get('clf', 3).config['parent_version'] == 2 and reg.get('clf', 3).metrics['holdout_accuracy'] == 0.0
