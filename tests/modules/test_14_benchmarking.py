"""Protected tests of module 14 (Benchmarking), run against the exported package.

The load generator is driven by a simulated clock, so every latency is known in advance and each
scenario is checked against arithmetic or queueing theory (the Pollaczek-Khinchine mean of an M/D/1
queue). The statistics are checked against brute-force enumeration (Mann-Whitney's exact null
distribution), a published critical value, a permutation test, NumPy's inverted-CDF percentile and
the textbook normal interval. Imports only modules 01-14; no data files, runs in seconds.
"""
import itertools
import json
import math

import numpy as np
import pytest

from tinytorch.tensor import manual_seed
from tinytorch.layers import Linear
from tinytorch.benchmarking import (
    Rules, LoadGenerator, BenchmarkResult, Comparison, percentile, bootstrap_ci, bootstrap_ratio_ci, mann_whitney_u, compare,
    reliability_warnings, find_max_qps, save_results, load_results, compare_runs, to_markdown, tinytorch_predictor,
    throughput_sweep)


class Clock:
    "Time that moves only when slept or when the fake model works."
    def __init__(self):
        self.now, self.calls = 0.0, []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += max(0.0, seconds)


def generator(service, clock=None, **rules):
    clock = clock or Clock()
    def model(batch):
        clock.calls.append(len(batch))
        clock.now += service(len(batch))
        return np.zeros((len(batch), 3))
    settings = dict(warmup_queries=0, min_queries=10, min_duration=0.0, max_duration=1e6)
    settings.update(rules)
    lg = LoadGenerator(model, np.arange(500, dtype=np.float32)[:, None], rules=Rules(**settings), clock=clock, sleep=clock.sleep)
    lg.load_average = lambda: 0.0
    return lg, clock


# ---------------------------------------------------------------- percentiles and results

def test_percentile_is_numpys_inverted_cdf():
    rng = np.random.default_rng(0)
    for n in (1, 7, 100, 1001):
        x = rng.exponential(size=n)
        for q in (1, 50, 90, 99, 99.9, 100):
            assert percentile(x, q) == np.percentile(x, q, method='inverted_cdf')
    assert percentile([1.0, 2.0, math.inf], 99) == math.inf
    with pytest.raises(ValueError, match='no latencies'):
        percentile([], 50)
    with pytest.raises(ValueError, match=r'q must be in \(0, 100\]'):
        percentile([1.0], 150)


def test_result_json_round_trip_keeps_unserved_queries(tmp_path):
    r = BenchmarkResult('Server', 'm', [0.002, 0.001, math.inf], 2, 0.5, params={'target_qps': 10}, problems=['overloaded'])
    path = save_results([r], tmp_path / 'r.json')
    raw = json.loads(open(path).read())
    assert raw[0]['latencies'] == [0.002, 0.001, None]
    (back,) = load_results(path)
    assert back.p99 == math.inf and back.p50 == 0.002 and not back.valid and back.params == {'target_qps': 10}
    assert abs(back.throughput - 4.0) < 1e-12
    (tmp_path / 'bad.json').write_text('{"schema": "x"}')
    with pytest.raises(ValueError, match='expected schema'):
        load_results(tmp_path / 'bad.json')


# ---------------------------------------------------------------- scenarios

def test_single_stream_times_each_query_and_follows_the_rules():
    durations = iter([0.5] * 3 + [0.001 * (i % 7 + 1) for i in range(1000)])      # three slow warm-up calls
    lg, clock = generator(lambda n: next(durations), warmup_queries=3, min_queries=40, min_duration=0.1)
    r = lg.single_stream()
    expected = [0.001 * (i % 7 + 1) for i in range(1000)]
    elapsed, k = 0.0, 0
    while not (k >= 40 and elapsed >= 0.1):                                   # the rules, by hand
        elapsed += expected[k]; k += 1
    assert r.n_queries == k and set(clock.calls) == {1} and len(clock.calls) == k + 3
    np.testing.assert_allclose(r.latencies, expected[:k])
    assert abs(r.p50 - np.percentile(expected[:k], 50, method='inverted_cdf')) < 1e-12
    assert r.valid and abs(r.duration - elapsed) < 1e-9


def test_too_slow_model_gives_an_invalid_run():
    lg, _ = generator(lambda n: 1.0, min_queries=50, max_duration=5)
    r = lg.single_stream()
    assert r.n_queries == 5 and not r.valid and '5 queries < min_queries 50' in r.problems[0]


def test_multi_stream_sends_fixed_size_queries():
    lg, clock = generator(lambda n: 0.001 * n, min_queries=25)
    r = lg.multi_stream(samples_per_query=6)
    assert set(clock.calls) == {6} and r.n_queries == 25 and r.n_samples == 150
    assert abs(r.p99 - 0.006) < 1e-12 and abs(r.throughput - 1000.0) < 1e-6
    with pytest.raises(ValueError, match='samples_per_query must be an int >= 1'):
        lg.multi_stream(samples_per_query=0)


@pytest.mark.parametrize('load', [0.3, 0.7])
def test_server_mean_latency_matches_pollaczek_khinchine(load):
    s = 0.004
    lg, _ = generator(lambda n: s, min_queries=20000)
    r = lg.server(target_qps=load / s)
    theory = s + load * s / (2 * (1 - load))
    assert abs(r.latencies.mean() - theory) < 0.05 * theory, (r.latencies.mean(), theory)
    assert abs(r.n_queries / r.duration - load / s) < 0.03 * load / s
    assert r.latencies.min() >= s - 1e-12


def test_server_arrivals_are_poisson():
    lg, clock = generator(lambda n: 1e-6, min_queries=5000)
    starts = []
    model = lg.model
    lg.model = lambda b: (starts.append(clock.now), model(b))[1]
    lg.server(target_qps=200)
    gaps = np.diff(starts)                         # the server is never busy, so each call starts at an arrival
    assert abs(gaps.mean() - 1 / 200) < 0.05 / 200
    assert abs(gaps.std() / gaps.mean() - 1) < 0.05           # exponential gaps: CV 1


def test_server_overload_is_invalid_and_dynamic_batching_fixes_it():
    cost = lambda n: 0.002 + 0.0005 * n
    lg, _ = generator(cost, min_queries=2000, max_duration=4)
    single = lg.server(600, latency_bound=0.05)
    assert not single.valid and math.isinf(single.p99) and any('overloaded' in p for p in single.problems)
    lg, clock = generator(cost, min_queries=2000, max_duration=4)
    batched = lg.server(600, latency_bound=0.05, max_batch=16)
    assert batched.valid and batched.p99 <= 0.05 and sum(clock.calls) == 2000 and max(clock.calls) <= 16
    with pytest.raises(ValueError, match='target_qps must be a number > 0'):
        lg.server(0)


def test_offline_walks_the_library_in_batches():
    lg, clock = generator(lambda n: 0.002 + 0.0001 * n, min_queries=1000)
    r = lg.offline(batch_size=128)
    assert clock.calls == [128] * 3 + [116] + [128] * 3 + [116]          # 500 samples: 3 x 128 + 116, twice
    assert r.n_samples == 1000 and abs(r.throughput - 1000 / (8 * 0.002 + 1000 * 0.0001)) < 1e-6


def test_accuracy_mode_matches_a_direct_evaluation():
    manual_seed(0)
    lin = Linear(5, 4)
    x = np.random.default_rng(0).standard_normal((301, 5)).astype(np.float32)
    direct = x @ lin.weight.numpy().T + lin.bias.numpy()
    y = direct.argmax(1)
    y[::3] = (y[::3] + 1) % 4                                             # a third of the labels disagree
    lg = LoadGenerator(tinytorch_predictor(lin), x, y, rules=Rules(warmup_queries=0, min_queries=1, min_duration=0))
    want = float((direct.argmax(1) == y).mean())
    for scenario, params in [('SingleStream', {}), ('MultiStream', {'samples_per_query': 8}), ('Offline', {'batch_size': 64})]:
        r = lg.run(scenario, mode='accuracy', **params)
        assert r.accuracy == want and r.n_samples == 301 and r.mode == 'accuracy'
    assert lg.run('MultiStream', mode='accuracy', samples_per_query=8).n_queries == math.ceil(301 / 8)


def test_hostile_inputs_are_named():
    with pytest.raises(ValueError, match='min_queries must be an int >= 1'):
        Rules(min_queries=0)
    with pytest.raises(ValueError, match='max_duration'):
        Rules(min_duration=10, max_duration=1)
    with pytest.raises(TypeError, match='model must be callable'):
        LoadGenerator(42, np.zeros((3, 2)))
    with pytest.raises(ValueError, match='n >= 1'):
        LoadGenerator(lambda b: b, np.zeros((0, 2)))
    with pytest.raises(ValueError, match='3 samples but labels of shape'):
        LoadGenerator(lambda b: b, np.zeros((3, 2)), np.zeros(4))
    lg = LoadGenerator(lambda b: b, np.zeros((3, 2)))
    with pytest.raises(ValueError, match='accuracy mode needs labels'):
        lg.run('Offline', mode='accuracy')
    with pytest.raises(ValueError, match="unknown scenario 'Burst'"):
        lg.run('Burst')


# ---------------------------------------------------------------- statistics

def test_mann_whitney_exact_distribution_matches_enumeration():
    for m, n in [(3, 4), (5, 5), (4, 7)]:
        pooled = np.arange(m + n, dtype=float)
        us = []
        for group in itertools.combinations(range(m + n), m):
            a = pooled[list(group)]
            b = np.delete(pooled, list(group))
            us.append(sum(x > y for x in a for y in b))
        dist = np.bincount(us, minlength=m * n + 1) / len(us)
        # random arrangements of the pooled ranks: their p-values must be the enumerated tail sums
        rng = np.random.default_rng(m * 10 + n)
        for _ in range(20):
            perm = rng.permutation(m + n).astype(float)
            a, b = perm[:m], perm[m:]
            u = sum(x > y for x in a for y in b)
            got_u, p_less = mann_whitney_u(a, b, 'less')
            assert got_u == u
            assert abs(p_less - dist[:u + 1].sum()) < 1e-12
            assert abs(mann_whitney_u(a, b, 'greater')[1] - dist[u:].sum()) < 1e-12


def test_mann_whitney_published_critical_value():
    # n1 = n2 = 5, two-sided 5 %: the table's critical U is 2 (P(U <= 2) = 4/252, P(U <= 3) = 7/252)
    assert abs(mann_whitney_u([1, 2, 3, 4, 7], [5, 6, 8, 9, 10], 'less')[1] - 4 / 252) < 1e-12      # U = 2
    assert abs(mann_whitney_u([1, 2, 3, 5, 7], [4, 6, 8, 9, 10], 'two-sided')[1] - 2 * 7 / 252) < 1e-12   # U = 3
    assert mann_whitney_u([1, 2, 3, 4, 7], [5, 6, 8, 9, 10], 'two-sided')[1] < 0.05
    assert mann_whitney_u([1, 2, 3, 5, 7], [4, 6, 8, 9, 10], 'two-sided')[1] > 0.05


def test_mann_whitney_normal_approximation_matches_a_permutation_test():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 5, 50).astype(float), rng.integers(1, 6, 45).astype(float)      # many ties
    u, p = mann_whitney_u(a, b, 'less')
    assert u == sum((x > y) + 0.5 * (x == y) for x in a for y in b)
    pooled = np.concatenate([a, b])
    perm = []
    for _ in range(3000):
        q = rng.permutation(pooled)
        perm.append(((q[:50, None] > q[None, 50:]) + 0.5 * (q[:50, None] == q[None, 50:])).sum())
    assert abs(p - np.mean(np.array(perm) <= u + 1e-9)) < 0.02
    with pytest.raises(ValueError, match='exact method needs samples without ties'):
        mann_whitney_u([1, 1], [2, 3], method='exact')
    with pytest.raises(ValueError, match='contains inf or NaN'):
        mann_whitney_u([1, math.nan], [2, 3])


def test_mann_whitney_controls_false_alarms():
    rng = np.random.default_rng(2)
    rate = np.mean([mann_whitney_u(rng.lognormal(size=80), rng.lognormal(size=80), 'less')[1] < 0.05 for _ in range(500)])
    assert 0.025 <= rate <= 0.075, rate


def test_bootstrap_interval_matches_the_normal_interval_and_covers():
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 1.0, 500)
    lo, hi = bootstrap_ci(x, np.mean, n_resamples=4000)
    half = 1.959964 * x.std(ddof=1) / math.sqrt(x.size)
    assert abs(lo - (x.mean() - half)) < 0.1 * half and abs(hi - (x.mean() + half)) < 0.1 * half
    covered = sum(lo <= 1.0 <= hi for lo, hi in (bootstrap_ci(rng.exponential(1.0, 100) + 1 - math.log(2), n_resamples=300, seed=t)
                                                  for t in range(150)))
    assert 0.88 * 150 <= covered <= 150, covered           # the median of Exp(1) + 1 - ln 2 is exactly 1
    lo, hi = bootstrap_ratio_ci(rng.exponential(3.0, 3000), rng.exponential(1.0, 3000))
    assert lo < 3.0 < hi and hi / lo < 1.3
    with pytest.raises(ValueError, match='confidence must be in'):
        bootstrap_ci([1.0, 2.0], confidence=1.5)


def test_compare_gives_ratio_interval_and_verdict():
    rng = np.random.default_rng(4)
    fast, slow = 0.008 * rng.lognormal(0, 0.3, 400), 0.010 * rng.lognormal(0, 0.3, 400)
    c = compare(fast, slow, 'new', 'old')
    assert c.verdict == 'new is faster than old'
    assert abs(c.ratio - np.median(fast) / np.median(slow)) < 1e-12 and c.ci_low < c.ratio < c.ci_high
    assert compare(slow, fast, 'old', 'new').verdict == 'new is faster than old'
    assert compare(fast, 0.008 * rng.lognormal(0, 0.3, 400), 'a', 'b').verdict.startswith('no significant difference')


@pytest.mark.parametrize("p_a, p_b, lo, hi, want", [
    (0.001, 0.999, 0.80, 0.90, 'new is faster than old'),
    (0.999, 0.001, 1.10, 1.20, 'old is faster than new'),
    (0.001, 0.999, 0.98, 1.03, 'differ in distribution'),      # the 1.00x [0.98, 1.03] case: the test alone is not enough
    (0.999, 0.001, 0.97, 1.02, 'differ in distribution'),
    (0.001, 0.999, 1.05, 1.10, 'differ in distribution'),      # test and interval point opposite ways
    (0.300, 0.700, 0.80, 0.90, 'no significant difference'),   # the interval alone is not enough
    (0.700, 0.300, 1.10, 1.20, 'no significant difference'),
    (0.050, 0.950, 0.80, 0.90, 'no significant difference'),   # p must be below alpha, not equal to it
])
def test_verdict_needs_the_test_and_the_interval_to_agree(p_a, p_b, lo, hi, want):
    c = Comparison('new', 'old', 'median', 1.0, 1.0, (lo + hi) / 2, lo, hi, 0.95, p_a, p_b, 0.05)
    assert want in c.verdict and want in str(c)


def test_reliability_warnings():
    steady = np.full(100, 0.01) + np.linspace(-1e-4, 1e-4, 100)
    assert reliability_warnings(steady, load_average=0.1, cores=2) == []
    spread = np.r_[np.full(90, 0.01), np.full(10, 0.05)]
    cv = spread.std(ddof=1) / spread.mean()
    (note,) = reliability_warnings(spread, load_average=0.1, cores=2)
    assert f'{cv:.0%}' in note
    (note,) = reliability_warnings(steady, load_average=5.0, cores=4)
    assert 'load average 5.00 on 4 cores' in note


def test_qps_search_agrees_with_a_grid_scan():
    def lg():
        return generator(lambda n: 0.010, min_queries=800)[0]
    search = find_max_qps(lg(), latency_bound=0.04, tolerance=0.02)
    ok = [(q, lg().server(q, 0.04).valid) for q in np.arange(30.0, 100.0, 2.0)]
    assert [v for _, v in ok] == sorted((v for _, v in ok), reverse=True)
    scan = max(q for q, v in ok if v)
    assert scan / 1.02 <= search.best_qps < scan + 2
    assert search.best.valid and all((p.p99 <= 0.04) == p.valid for p in search.probes)


def test_reports_and_run_comparison(tmp_path):
    rng = np.random.default_rng(5)
    before = [BenchmarkResult('SingleStream', 'cnn', 0.010 * rng.lognormal(0, 0.1, 300), 300, 3.0)]
    after = [BenchmarkResult('SingleStream', 'cnn', 0.012 * rng.lognormal(0, 0.1, 300), 300, 3.6)]
    save_results(before, tmp_path / 'a.json')
    (c,) = compare_runs(tmp_path / 'a.json', after)
    assert c.verdict == 'cnn before is faster than cnn now'
    table = to_markdown(after)
    assert table.splitlines()[2].startswith('| SingleStream | cnn | 300 | ')
    sweep = throughput_sweep(generator(lambda n: 0.001 + 0.0002 * n, min_queries=300)[0], batch_sizes=(1, 10, 100))
    np.testing.assert_allclose([r.throughput for r in sweep], [b / (0.001 + 0.0002 * b) for b in (1, 10, 100)], rtol=1e-9)
