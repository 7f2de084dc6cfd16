"""Protected tests for module 16 (Capstone): the serving pieces, run against the exported package.

References are independent of the module: softmax in float64 NumPy, hand-built Open Inference
Protocol requests, batch bookkeeping traced through a predictor whose answer reveals which images
it saw, the app driven in-process by Starlette's test client (a real HTTP/ASGI client) and its
Prometheus output parsed by prometheus-client's own parser. Hostile input is part of every section.
Imports modules 01-16 only; the pipeline test needs Fashion-MNIST and skips with instructions
without it.
"""
import asyncio
import collections
import gc
import json

import numpy as np
import pytest

from tinytorch.tensor import Tensor, manual_seed
from tinytorch.training import fashion_cnn
from tinytorch.capstone import (
    DriftMonitor, DynamicBatcher, Predictor, ServeConfig, ServerState, ServingError, StaticSource, choose_production,
    create_app, decode_infer_request, drift_features, encode_infer_response)

pytest.importorskip('starlette', reason='the serve extra is not installed: run `make install`')
from starlette.testclient import TestClient  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

rng = np.random.default_rng(16)


def images(n, seed=0):
    return np.random.default_rng(seed).random((n, 1, 28, 28), dtype=np.float32)


def softmax64(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


class Fixed:
    "A 'model' whose logits are a known function of the input: sums of 10 pixel blocks, times a scale."
    def __init__(self, scale=1.0): self.scale = scale

    def __call__(self, t):
        return Tensor((logits_of(t.data, self.scale)).astype(np.float32))


def logits_of(x, scale=1.0):
    return x.reshape(len(x), -1)[:, :780].reshape(len(x), 10, 78).astype(np.float64).sum(2) * scale


class Tagger:
    "A predictor whose row i is [image i's mean pixel, 0, ...]: shows which image each answer came from."
    def __init__(self, version=1): self.version, self.name, self.classes, self.kind, self.calls = version, 'fashion-mnist', tuple('abcdefghij'), 'float32', []

    def __call__(self, x):
        self.calls.append(len(x))
        out = np.zeros((len(x), 10), np.float32)
        out[:, 0] = x.reshape(len(x), -1).mean(1)
        out[:, 1] = self.version
        return out


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(autouse=True)
def collect_garbage():
    "Finalise asyncio objects a failed test left behind now, not while pytest parses source for a report (CPython 3.11)."
    gc.collect()
    yield
    gc.collect()


# --------------------------------------------------------------------------- Predictor

def test_predictor_is_a_stable_softmax_of_the_logits():
    x = images(6)
    p = Predictor(Fixed(scale=0.05))(x)
    assert p.dtype == np.float32 and p.shape == (6, 10)
    np.testing.assert_allclose(p, softmax64(logits_of(x, 0.05)), atol=1e-6)
    big = Predictor(Fixed(scale=1000.0))(x)                      # logits in the thousands: a naive exp overflows
    assert np.isfinite(big).all()
    np.testing.assert_allclose(big, softmax64(logits_of(x, 1000.0)), atol=1e-6)
    np.testing.assert_allclose(big.sum(1), 1, atol=1e-6)


def test_predictor_puts_the_model_in_eval_mode_and_matches_its_forward():
    manual_seed(3)
    net = fashion_cnn()
    net.train()
    pred = Predictor(net, version=2)
    assert net.training is False
    x = images(4, seed=1)
    np.testing.assert_allclose(pred(x), softmax64(net(Tensor(x)).data), atol=1e-6)


@pytest.mark.parametrize('bad, words', [
    (np.zeros((2, 28, 28), np.float32), 'shaped (N, 1, 28, 28)'),
    (np.zeros((0, 1, 28, 28), np.float32), 'N >= 1'),
    (np.full((1, 1, 28, 28), np.inf, np.float32), 'finite'),
    (np.array([['a'] * 784]).reshape(1, 1, 28, 28), 'must be numbers'),
])
def test_predictor_refuses_bad_images(bad, words):
    with pytest.raises(ValueError, match=words.replace('(', r'\(').replace(')', r'\)')):
        Predictor(Fixed())(bad)


def test_predictor_checks_its_arguments():
    with pytest.raises(TypeError, match='callable'):
        Predictor(42)
    with pytest.raises(ValueError, match='version'):
        Predictor(Fixed(), version=0)


# --------------------------------------------------------------------------- protocol

def body(x=None, **over):
    x = images(1) if x is None else x
    t = {'name': 'images', 'shape': list(x.shape), 'datatype': 'FP32', 'data': x.ravel().tolist()}
    t.update(over)
    return json.dumps({'id': 'abc', 'inputs': [t]}).encode()


def test_decode_accepts_flat_and_nested_data_and_encode_answers_in_the_protocol():
    x = images(3)
    got, rid = decode_infer_request(body(x))
    assert rid == 'abc' and got.dtype == np.float32
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(decode_infer_request(body(x, data=x.tolist()))[0], x)
    np.testing.assert_array_equal(decode_infer_request(body(x, data=[int(v > 0.5) for v in x.ravel()]))[0],
                                  (x > 0.5).astype(np.float32))      # integers are numbers too
    p = softmax64(logits_of(x)).astype(np.float32)
    out = encode_infer_response(p, 'fashion-mnist', 4, 'abc')
    assert out['model_name'] == 'fashion-mnist' and out['model_version'] == '4' and out['id'] == 'abc'
    (tensor,) = out['outputs']
    assert (tensor['name'], tensor['shape'], tensor['datatype']) == ('probabilities', [3, 10], 'FP32')
    np.testing.assert_array_equal(np.array(tensor['data'], np.float32).reshape(3, 10), p)
    json.dumps(out)                                                   # plain JSON types only
    assert 'id' not in encode_infer_response(p, 'm', 1)


def _nan_body():
    s = body().decode()
    first = s.index('"data": [') + len('"data": [')
    return (s[:first] + 'NaN, ' + s[s.index(',', first) + 2:]).encode()


HOSTILE = [
    (b'{"inputs": [', 400, 'malformed JSON'),
    (b'\xff\xfe\x00', 400, 'UTF-8'),
    (b'"just a string"', 400, 'JSON object'),
    (b'{}', 400, "'inputs'"),
    (b'{"inputs": {}}', 400, 'must be a list'),
    (b'{"inputs": []}', 400, 'exactly one tensor'),
    (b'{"inputs": [1]}', 400, 'must be an object'),
    (b'{"inputs": [{"name": "images", "shape": [1, 1, 28, 28], "datatype": "FP32"}]}', 400, "'data'"),
    (body(name='x'), 400, "named 'images'"),
    (body(datatype='INT8'), 400, "'FP32', got 'INT8'"),
    (body(datatype=32), 400, 'must be a string'),
    (body(shape=[1, 784]), 400, '[N, 1, 28, 28]'),
    (body(shape=[1, 1, 28, 28.0]), 400, 'list of integers'),
    (body(shape=[True, 1, 28, 28]), 400, 'list of integers'),
    (body(data=[0.5] * 783), 400, 'holds 783 values'),
    (body(data='0.5'), 400, 'must be a list'),
    (body(data=['0.5'] * 784), 400, 'strings'),
    (body(data=[False] * 784), 400, 'booleans'),
    (body(data=[None] * 784), 400, 'only numbers'),
    (body(data=[[0.5] * 28] * 27 + [[0.5] * 27]), 400, 'ragged'),
    (body(data=np.zeros((1, 28, 28)).tolist()), 400, 'nested as [1, 28, 28]'),
    (_nan_body(), 400, 'NaN or infinite'),
    (_nan_body().replace(b'NaN', b'-Infinity'), 400, 'NaN or infinite'),
    (_nan_body().replace(b'NaN', b'3e38'), None, None),              # the largest float32s are fine
    (_nan_body().replace(b'NaN', b'1e39'), 400, 'beyond float32'),
    (body(images(5)), 413, 'at most 4 images'),
    (json.dumps({'inputs': json.loads(body())['inputs'], 'id': 7}).encode(), 400, "'id' must be a string"),
    (json.dumps({'inputs': json.loads(body())['inputs'], 'outputs': [{'name': 'logits'}]}).encode(), 400, "'probabilities'"),
]


@pytest.mark.parametrize('raw, status, words', HOSTILE)
def test_decode_refuses_hostile_requests_with_a_named_error(raw, status, words):
    if status is None:
        assert decode_infer_request(raw, max_images=4)[0].shape == (1, 1, 28, 28)
        return
    with pytest.raises(ServingError) as e:
        decode_infer_request(raw, max_images=4)
    assert e.value.status == status and words in e.value.message, e.value.message


# --------------------------------------------------------------------------- dynamic batching

async def _burst(batcher, xs, timeout=10):
    await batcher.start()
    try:
        return await asyncio.gather(*(batcher.submit(x, timeout=timeout) for x in xs))
    finally:
        await batcher.stop()


def test_batcher_groups_concurrent_requests_and_returns_each_its_own_rows():
    x = images(10)
    tagger = Tagger()
    b = DynamicBatcher(tagger, max_batch_size=4, max_wait_ms=500)
    answers = run(_burst(b, [x[i:i + 1] for i in range(10)]))
    assert tagger.calls == [4, 4, 2] and b.batch_sizes == [4, 4, 2]
    for i, (probs, predictor) in enumerate(answers):
        assert predictor is tagger and probs.shape == (1, 10)
        assert probs[0, 0] == pytest.approx(float(x[i].mean()), abs=1e-6)


def test_batcher_mixed_request_sizes_and_an_oversized_request():
    x = images(12)
    tagger = Tagger()
    b = DynamicBatcher(tagger, max_batch_size=4, max_wait_ms=500)
    answers = run(_burst(b, [x[0:3], x[3:4], x[4:6], x[6:12]]))      # 3 | 1 -> 4; 2 alone (6 would not fit); 6 alone
    assert tagger.calls == [4, 2, 6]
    np.testing.assert_allclose(np.concatenate([p[:, 0] for p, _ in answers]), x.reshape(12, -1).mean(1), atol=1e-6)


def test_batch_size_one_means_no_batching():
    tagger = Tagger()
    run(_burst(DynamicBatcher(tagger, max_batch_size=1, max_wait_ms=50), [images(1, s) for s in range(6)]))
    assert tagger.calls == [1] * 6


def test_batcher_does_not_wait_past_max_wait_ms_and_skips_abandoned_requests():
    tagger = Tagger()

    async def scenario():
        b = DynamicBatcher(tagger, max_batch_size=64, max_wait_ms=20)
        await b.start()
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            await b.submit(images(1), timeout=5)                    # alone: answered after ~max_wait_ms, not later
            alone = loop.time() - start
            b.max_wait_ms = 300
            gave_up = asyncio.create_task(b.submit(images(1, 1), timeout=0.05))
            kept = asyncio.create_task(b.submit(images(1, 2), timeout=5))
            with pytest.raises(ServingError, match='did not finish within'):
                await gave_up
            await kept
            return alone
        finally:
            await b.stop()
    alone = run(scenario())
    assert alone < 0.25
    assert tagger.calls == [1, 1], 'the request whose client gave up is not computed'


def test_a_failing_model_fails_its_batch_not_the_batcher():
    class Flaky(Tagger):
        def __call__(self, x):
            if len(self.calls) == 0:
                self.calls.append(len(x))
                raise RuntimeError('boom')
            return super().__call__(x)

    async def scenario():
        b = DynamicBatcher(Flaky(), max_batch_size=8, max_wait_ms=100)
        await b.start()
        try:
            first = await asyncio.gather(*(b.submit(images(1, s), timeout=5) for s in range(3)), return_exceptions=True)
            second = await b.submit(images(1, 9), timeout=5)
            return first, second
        finally:
            await b.stop()
    first, (probs, _) = run(scenario())
    assert all(isinstance(e, ServingError) and e.status == 500 and 'RuntimeError: boom' in e.message for e in first)
    assert probs[0, 0] == pytest.approx(float(images(1, 9).mean()), abs=1e-6)


def test_batcher_checks_its_arguments_and_overload():
    with pytest.raises(ValueError, match='max_batch_size'):
        DynamicBatcher(Tagger(), max_batch_size=0)
    with pytest.raises(ValueError, match='max_wait_ms'):
        DynamicBatcher(Tagger(), max_wait_ms=float('nan'))
    with pytest.raises(TypeError, match='callable'):
        DynamicBatcher('model')

    async def overload():
        b = DynamicBatcher(Tagger(), max_batch_size=2, max_wait_ms=1000, max_queue_images=3)
        await b.start()
        try:
            pending = [asyncio.create_task(b.submit(images(1, s), timeout=5)) for s in range(3)]
            await asyncio.sleep(0)
            with pytest.raises(ServingError) as e:
                await b.submit(images(1, 5), timeout=5)
            assert e.value.status == 503 and 'overloaded' in e.value.message
            await asyncio.gather(*pending)
        finally:
            await b.stop()
    run(overload())
    with pytest.raises(ServingError, match='not running'):
        run(DynamicBatcher(Tagger()).submit(images(1)))


# --------------------------------------------------------------------------- hot swap and drift

class TwoVersions:
    def __init__(self): self.models, self.current = {1: Tagger(1), 2: Tagger(2)}, 1
    def latest(self): return self.current
    def load(self, key): return self.models[key]


def test_hot_swap_changes_the_model_between_batches_without_dropping_requests():
    source = TwoVersions()

    async def scenario():
        state = ServerState(source, ServeConfig(max_batch_size=4, max_wait_ms=1, poll_seconds=0))
        await state.start()
        try:
            assert state.predictor.version == 1 and await state.refresh() is False
            tasks = [asyncio.create_task(state.batcher.submit(images(1, s), timeout=10)) for s in range(40)]
            await asyncio.sleep(0)
            source.current = 2
            assert await state.refresh() is True
            tasks += [asyncio.create_task(state.batcher.submit(images(1, s), timeout=10)) for s in range(40, 60)]
            answers = await asyncio.gather(*tasks)
            return answers, state.predictor.version
        finally:
            await state.stop()
    answers, served = run(scenario())
    assert served == 2 and len(answers) == 60
    for probs, predictor in answers:
        assert probs[0, 1] == predictor.version                      # each answer comes from the model it names
    assert all(p.version == 2 for _, p in answers[40:])
    assert collections.Counter(p.version for _, p in answers)[1] >= 1


def test_drift_monitor_tests_each_full_window_of_images():
    class Detector:
        def __init__(self): self.seen = []
        def check(self, batch):
            self.seen.append(np.asarray(batch))
            return type('R', (), {'drift': bool(np.mean(batch) > 0.6), 'statistic': 0.0, 'p_value': 0.5})()
    det = Detector()
    monitor = DriftMonitor(det, window=8)
    x = images(12)
    assert monitor.observe(x[:5]) is None and det.seen == []
    result = monitor.observe(x[5:12])
    assert result is not None and monitor.checks == 1 and monitor.last is result
    np.testing.assert_array_equal(det.seen[0], x)                   # the whole window, in arrival order
    bright = np.full((8, 1, 28, 28), 0.9, np.float32)
    assert monitor.observe(bright).drift is True and monitor.checks == 2
    np.testing.assert_array_equal(det.seen[1], bright)              # the previous window was emptied
    with pytest.raises(TypeError, match='check'):
        DriftMonitor(object())
    with pytest.raises(ValueError, match='window'):
        DriftMonitor(det, window=2)


def test_drift_features_are_2x2_means():
    x = images(3)
    ref = np.array([[[[x[n, 0, 2 * i:2 * i + 2, 2 * j:2 * j + 2].mean() for j in range(14)] for i in range(14)]] for n in range(3)])
    np.testing.assert_allclose(drift_features(x), ref, atol=1e-6)


# --------------------------------------------------------------------------- the app over ASGI

def metric_samples(text):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def test_app_speaks_the_protocol_and_counts_what_it_served():
    manual_seed(0)
    pred = Predictor(fashion_cnn(), version=5)
    x = images(3, seed=7)
    expected = pred(x)
    config = ServeConfig(max_batch_size=8, max_body_bytes=50_000, max_request_images=4, poll_seconds=0)
    with TestClient(create_app(StaticSource(pred), config)) as client:
        assert client.get('/v2/health/live').status_code == 200
        assert client.get('/v2/health/ready').json() == {'ready': True}
        meta = client.get('/v2/models/fashion-mnist').json()
        assert meta['name'] == 'fashion-mnist' and meta['versions'] == ['5']
        assert meta['inputs'] == [{'name': 'images', 'datatype': 'FP32', 'shape': [-1, 1, 28, 28]}]
        assert meta['outputs'] == [{'name': 'probabilities', 'datatype': 'FP32', 'shape': [-1, 10]}]
        assert client.get('/v2/models/fashion-mnist/versions/5/ready').status_code == 200
        r = client.post('/v2/models/fashion-mnist/infer', content=body(x))
        assert r.status_code == 200
        np.testing.assert_allclose(np.array(r.json()['outputs'][0]['data']).reshape(3, 10), expected, atol=1e-6)
        assert client.post('/v2/models/fashion-mnist/versions/5/infer', content=body(x[:1])).status_code == 200
        statuses = collections.Counter()
        for raw, status, words in [h for h in HOSTILE if h[1] is not None] + [(body(images(2)), None, None)]:
            r = client.post('/v2/models/fashion-mnist/infer', content=raw)
            statuses[r.status_code] += 1
            assert r.status_code < 500 and 'error' in r.json() or r.status_code == 200, r.text
        over = client.post('/v2/models/fashion-mnist/infer', content=b'[' + b'0.5, ' * 20_000 + b'0]')
        assert over.status_code == 413 and 'limit is 50000 bytes' in over.json()['error']
        assert client.post('/v2/models/mnist/infer', content=body()).status_code == 404
        r = client.post('/v2/models/fashion-mnist/versions/4/infer', content=body())
        assert r.status_code == 404 and "version '4'" in r.json()['error']
        assert client.get('/v2/models/fashion-mnist/infer').status_code == 405
        assert 'error' in client.get('/nope').json()
        assert '<canvas id="pad"' in client.get('/').text
        values = metric_samples(client.get('/metrics').text)
    route = ('route', '/v2/models/{name}/infer')

    def count(status):
        return values.get(('tinytorch_requests_total', tuple(sorted((('method', 'POST'), route, ('status', str(status)))))), 0)
    assert count(200) == 1 + statuses[200]
    assert count(400) == statuses[400]
    assert count(413) == statuses[413] + 1
    assert count(404) == 1
    assert values['tinytorch_request_latency_seconds_count', (route,)] == 1 + sum(statuses.values()) + 3   # + over-size, unknown model, GET (405)
    assert values['tinytorch_batch_size_sum', ()] == 3 + 1 + 2 * statuses[200]
    assert values['tinytorch_model_version', (('model', 'fashion-mnist'),)] == 5


# --------------------------------------------------------------------------- choosing what goes to production

def test_choose_production_prefers_the_fastest_model_within_the_accuracy_budget():
    m = {'float32': {'accuracy': 0.912, 'latency_ms': 10.0}, 'int8': {'accuracy': 0.905, 'latency_ms': 4.0}}
    assert choose_production(m) == 'int8'
    assert choose_production(m, max_accuracy_drop=0.005) == 'float32'
    m['int8']['latency_ms'] = 12.0
    assert choose_production(m) == 'float32'
    assert choose_production({'only': {'accuracy': 0.1, 'latency_ms': 1.0}}) == 'only'
    with pytest.raises(ValueError, match='no candidates'):
        choose_production({})
