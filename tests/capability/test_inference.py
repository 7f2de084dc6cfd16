"""Inference Deployment milestone capability: "Can deploy optimized models for production inference".

End to end through the public API (modules 11-15), on the Fashion-MNIST CNN that the Training
capability test trained and cached (the `fashion_checkpoint` fixture; skipped, with instructions,
only when Fashion-MNIST is not installed):

1. load the trained CNN from its checkpoint;
2. compress it to int8 (module 12): the file is at most 25 % of the float32 checkpoint and loses at
   most 1 accuracy point, measured in the load generator's accuracy mode on the same held-out images
   for both models;
3. benchmark the compressed model in all four MLPerf scenarios (module 14) with short run rules,
   and check the runs kept their rules and round-trip through JSON;
4. register both versions (module 15), promote the int8 one, and load it back verified;
5. detect simulated drift (brightness, rotation, class mix) while unshifted batches pass.

Sizes are kept small (2,000 test images for the accuracy comparison, runs of a fraction of a
second) so the whole file takes about a minute; the notebooks of modules 12, 14 and 15 run the full
versions. Run `pytest -s tests/capability/test_inference.py` to see the numbers.
"""
import os
import time

import numpy as np
import pytest

from tinytorch.tensor import Tensor
from tinytorch.autograd import no_grad
from tinytorch.dataloader import FashionMNIST
from tinytorch.training import fashion_cnn, load_checkpoint
from tinytorch.compression import quantize_int8, save_compressed, load_compressed
from tinytorch.benchmarking import LoadGenerator, Rules, tinytorch_predictor, save_results, load_results, to_markdown
from tinytorch.mlops import ModelRegistry, DriftDetector, dataset_hash, file_sha256, sample_batch

N_EVAL = 2000          # held-out test images for the float32 / int8 accuracy comparison


@pytest.fixture(scope='module')
def deployment(fashion_checkpoint, tmp_path_factory):
    "The trained float32 CNN, its int8 version saved to a file, and the data (built once for the tests below)."
    start = time.perf_counter()
    train, test = FashionMNIST(train=True), FashionMNIST(train=False)
    model = fashion_cnn()
    load_checkpoint(fashion_checkpoint, model)
    model.eval()
    x_cal = train.get_batch(np.arange(1000))[0]
    int8 = quantize_int8(model, [x_cal[i:i + 100] for i in range(0, 1000, 100)])
    folder = tmp_path_factory.mktemp('deploy')
    int8_file = save_compressed(int8, folder / 'fashion-int8.npz')
    x_test, y_test = test.get_batch(np.arange(len(test)))
    order = np.random.default_rng(0).permutation(len(x_test))
    print(f"\n[inference capability] setup {time.perf_counter() - start:.1f} s")
    return dict(model=model, int8=load_compressed(int8_file), int8_file=int8_file, folder=folder,
                checkpoint=fashion_checkpoint, x_test=x_test, y_test=y_test, order=order)


def test_int8_is_a_quarter_of_the_size_and_loses_at_most_one_point(deployment):
    d = deployment
    ratio = os.path.getsize(d['int8_file']) / os.path.getsize(d['checkpoint'])
    idx = d['order'][:N_EVAL]
    x, y = d['x_test'][idx], d['y_test'][idx]
    rules = Rules(warmup_queries=1, min_queries=1, min_duration=0)
    start = time.perf_counter()
    acc = {name: LoadGenerator(tinytorch_predictor(m, name), x, y, rules=rules).run('Offline', mode='accuracy', batch_size=500).accuracy
           for name, m in (('float32', d['model']), ('int8', d['int8']))}
    with no_grad():
        direct = float((d['int8'](Tensor(x[:500])).data.argmax(1) == y[:500]).mean())
    lost = (acc['float32'] - acc['int8']) * 100
    print(f"\n[inference capability] int8 file {ratio:.1%} of the float32 checkpoint; accuracy on {N_EVAL} held-out test images: "
          f"float32 {acc['float32']:.4f}, int8 {acc['int8']:.4f} ({lost:+.2f} points lost; {time.perf_counter() - start:.1f} s)")
    assert ratio <= 0.25
    assert lost <= 1.0
    assert acc['float32'] >= 0.88                      # it is the trained model (about 91 % on the full test set)
    small = LoadGenerator(tinytorch_predictor(d['int8']), x[:500], y[:500], rules=rules).run('Offline', mode='accuracy', batch_size=500)
    assert small.accuracy == direct                    # accuracy mode scores exactly what the model outputs


def test_benchmark_in_all_four_scenarios(deployment, tmp_path):
    d = deployment
    pool = d['x_test'][d['order'][:1000]]
    rules = Rules(warmup_queries=3, min_queries=20, min_duration=0.3, max_duration=60)
    lg = LoadGenerator(tinytorch_predictor(d['int8'], 'fashion-int8'), pool, rules=rules)
    start = time.perf_counter()
    single = lg.run('SingleStream')
    results = [single, lg.run('MultiStream', samples_per_query=8),
               lg.run('Server', target_qps=0.25 / single.p50, max_batch=8),
               lg.run('Offline', batch_size=64)]
    print(f"\n[inference capability] four scenarios in {time.perf_counter() - start:.1f} s (loaded machine: timings are indicative)\n"
          + to_markdown(results))
    for r in results:
        assert r.valid, (r.scenario, r.problems)
        assert np.isfinite(r.latencies).all() and (r.latencies > 0).all() and r.throughput > 0
    assert [r.scenario for r in results] == ['SingleStream', 'MultiStream', 'Server', 'Offline']
    assert results[1].n_samples == 8 * results[1].n_queries and results[3].n_samples >= 20
    back = load_results(save_results(results, tmp_path / 'inference.json'))
    assert [(b.scenario, b.p99, b.throughput) for b in back] == [(r.scenario, r.p99, r.throughput) for r in results]


def test_register_both_versions_and_serve_the_int8_one(deployment, tmp_path):
    d = deployment
    reg = ModelRegistry(tmp_path / 'registry')
    data = dataset_hash(d['x_test'], d['y_test'])
    v1 = reg.register('fashion-cnn', d['model'], metrics={'size_bytes': os.path.getsize(d['checkpoint'])}, dataset_hash=data,
                      config={'variant': 'float32'})
    v2 = reg.register('fashion-cnn', d['int8_file'], metrics={'size_bytes': os.path.getsize(d['int8_file'])}, dataset_hash=data,
                      config={'variant': 'int8'})
    reg.promote('fashion-cnn', v1.version)
    reg.promote('fashion-cnn', v2.version)
    assert [(v.version, v.stage) for v in reg.versions('fashion-cnn')] == [(1, 'archived'), (2, 'production')]
    assert v2.sha256 == file_sha256(d['int8_file'])
    x = d['x_test'][:64]
    with no_grad():
        np.testing.assert_array_equal(reg.load('fashion-cnn')(Tensor(x)).data,
                                      d['int8'](Tensor(x)).data)
        np.testing.assert_array_equal(reg.load('fashion-cnn', 1)(Tensor(x)).data, d['model'](Tensor(x)).data)
    print(f"\n[inference capability] registry: {reg.versions('fashion-cnn')}")


def test_detect_simulated_drift(deployment):
    d = deployment
    ref_idx, pool_idx = d['order'][:2000], d['order'][2000:]
    start = time.perf_counter()
    detector = DriftDetector(d['x_test'][ref_idx], model=d['model'])
    x_pool, y_pool = d['x_test'][pool_idx], d['y_test'][pool_idx]
    rng = np.random.default_rng(1)
    verdicts = {shift: [detector.check(sample_batch(x_pool, y_pool, 300, shift, rng)[0]) for _ in range(3)]
                for shift in ('none', 'brightness', 'rotation', 'class_mix')}
    summary = {s: [round(r.p_value, 4) for r in rs] for s, rs in verdicts.items()}
    print(f"\n[inference capability] drift: adjusted p-values per batch {summary} ({time.perf_counter() - start:.1f} s)")
    assert sum(r.drift for r in verdicts['none']) <= 1
    for shift in ('brightness', 'rotation', 'class_mix'):
        assert all(r.drift for r in verdicts[shift]), (shift, summary[shift])
