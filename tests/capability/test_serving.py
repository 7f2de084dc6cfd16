"""Serving milestone capability: "Have built a complete, production-ready ML framework".

The capstone's pipeline trains (or loads) the Fashion-MNIST CNN, compresses it to int8, benchmarks
and registers both versions and promotes the better one; then the real server runs as a subprocess
(`tito serve` on a free 127.0.0.1 port) and a real HTTP client checks, over the Open Inference
Protocol:

1. predictions over HTTP equal the in-process model's on 100 test images;
2. a load burst of concurrent clients gets 0 errors, and dynamic batching really batches;
3. every kind of bad input gets a 4xx with a JSON `error` naming the problem (never a 500),
   including an over-size body and a body that arrives too slowly;
4. promoting another registry version while requests are in flight swaps the model with 0 errors;
5. `/metrics` counts equal the requests this test sent, by route and status;
6. the drift monitor (module 15) stays calm on test images and flags darkened ones;
7. SIGTERM drains the requests in flight and the server exits 0;
8. under `--workers 2` both processes answer, `/metrics` adds up both workers' counts, and one
   registry promotion reaches both.

All traffic goes to 127.0.0.1, bounded in count and time.
"""
import asyncio
import collections
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip('httpx', reason='the serve extra is not installed: run `make install` (pip install -e ".[serve]")')
pytest.importorskip('uvicorn', reason='the serve extra is not installed: run `make install` (pip install -e ".[serve]")')
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tinytorch.capstone import MODEL_NAME, Predictor, run_pipeline  # noqa: E402
from tinytorch.dataloader import FashionMNIST  # noqa: E402
from tinytorch.mlops import ModelRegistry  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
INFER = f'/v2/models/{MODEL_NAME}/infer'
INFER_ROUTE = '/v2/models/{name}/infer'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def body_for(x: np.ndarray, **extra) -> bytes:
    tensor = {'name': 'images', 'shape': list(x.shape), 'datatype': 'FP32', 'data': x.ravel().tolist()}
    tensor.update(extra)
    return json.dumps({'inputs': [tensor]}).encode()


class Server:
    """A `tito serve` subprocess and a tally of every request sent to it, by (method, route, status)."""

    def __init__(self, *args, env=None):
        self.port = free_port()
        self.base = f'http://127.0.0.1:{self.port}'
        self.log = open(Path(os.environ.get('TMPDIR', '/tmp')) / f'tinytorch-serve-{self.port}.log', 'w+')
        self.proc = subprocess.Popen([sys.executable, '-m', 'milestones.tito', 'serve', '--port', str(self.port), *args],
                                     cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env={**os.environ, **(env or {})})
        self.sent = collections.Counter()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f'the server exited with {self.proc.returncode}:\n{self.output()}'
            try:
                if httpx.get(self.base + '/v2/health/ready', timeout=2).status_code == 200:
                    self.sent['GET', '/v2/health/ready', 200] += 1
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f'the server was not ready within 120 s:\n{self.output()}')

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def request(self, method: str, path: str, route: str, **kw) -> httpx.Response:
        r = httpx.request(method, self.base + path, timeout=30, **kw)
        self.sent[method, route, r.status_code] += 1
        return r

    def metrics(self) -> dict:
        text = httpx.get(self.base + '/metrics', timeout=10).text
        self.sent['GET', '/metrics', 200] += 1
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


async def burst(base: str, bodies: list, clients: int, new_connections: bool = False) -> list:
    """Send every body with `clients` in flight at once; (status, model version, worker pid) per request."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=0 if new_connections else clients)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=60) as client:
        queue = list(enumerate(bodies))
        results = [None] * len(bodies)

        async def worker():
            while queue:
                i, body = queue.pop()
                r = await client.post(INFER, content=body, headers={'content-type': 'application/json'})
                results[i] = (r.status_code, r.json().get('model_version'), r.headers.get('x-tinytorch-worker'))
        await asyncio.gather(*(worker() for _ in range(clients)))
    return results


@pytest.fixture(scope='module')
def test_images():
    test = FashionMNIST(train=False)
    return test.get_batch(np.arange(1500))       # distinct images throughout, so the drift monitor sees a fair sample


@pytest.fixture(scope='module')
def pipeline(fashion_checkpoint, tmp_path_factory):
    start = time.perf_counter()
    result = run_pipeline(tmp_path_factory.mktemp('registry'), checkpoint=fashion_checkpoint, test_images=500, verbose=False)
    print(f'\n[serving capability] pipeline in {time.perf_counter() - start:.1f} s:\n{result}')
    return result


@pytest.fixture(scope='module')
def server(pipeline):
    s = Server('--registry', str(pipeline.registry_root), env={'TINYTORCH_SERVE_BODY_TIMEOUT_S': '1'})
    yield s
    s.stop()


def test_pipeline_registers_both_versions_and_promotes_the_better(pipeline):
    registry = ModelRegistry(pipeline.registry_root)
    versions = registry.versions(MODEL_NAME)
    assert len(versions) == 2
    kinds = {mv.config['kind']: mv for mv in versions}
    assert set(kinds) == {'float32', 'int8'}
    production = registry.get(MODEL_NAME, stage='production')
    assert production.config['kind'] == pipeline.promoted
    m = {k: mv.metrics for k, mv in kinds.items()}
    assert m['float32']['accuracy'] >= 0.88 and m['int8']['accuracy'] >= 0.88
    best = max(v['accuracy'] for v in m.values())
    eligible = [k for k, v in m.items() if v['accuracy'] >= best - 0.01]
    assert pipeline.promoted == min(eligible, key=lambda k: m[k]['latency_ms'])


def test_predictions_match_the_in_process_model(server, pipeline, test_images):
    x, y = test_images[0][:100], test_images[1][:100]
    assert server.request('GET', '/v2/health/live', '/v2/health/live').status_code == 200
    meta = server.request('GET', f'/v2/models/{MODEL_NAME}', '/v2/models/{name}').json()
    production = ModelRegistry(pipeline.registry_root).get(MODEL_NAME, stage='production')
    assert meta['versions'] == [str(production.version)]
    assert meta['inputs'] == [{'name': 'images', 'datatype': 'FP32', 'shape': [-1, 1, 28, 28]}]
    assert meta['outputs'] == [{'name': 'probabilities', 'datatype': 'FP32', 'shape': [-1, 10]}]
    expected = Predictor(ModelRegistry(pipeline.registry_root).load(MODEL_NAME))(x)
    got = []
    for chunk in (x[:1], x[1:25], x[25:60], x[60:]):               # batches of 1, 24, 35 and 40 images
        r = server.request('POST', INFER, INFER_ROUTE, content=body_for(chunk))
        assert r.status_code == 200, r.text
        out = r.json()
        assert out['model_name'] == MODEL_NAME and out['model_version'] == str(production.version)
        assert out['outputs'][0]['shape'] == [len(chunk), 10] and out['outputs'][0]['datatype'] == 'FP32'
        got.append(np.array(out['outputs'][0]['data'], np.float32).reshape(len(chunk), 10))
    got = np.concatenate(got)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert (got.argmax(1) == y).mean() >= 0.85
    nested = server.request('POST', INFER, INFER_ROUTE, content=body_for(x[:2], data=x[:2].tolist()))
    np.testing.assert_allclose(np.array(nested.json()['outputs'][0]['data']).reshape(2, 10), expected[:2], atol=1e-6)


def test_load_burst_has_no_errors_and_batches(server, test_images):
    x = test_images[0]
    before = server.metrics()
    bodies = [body_for(x[i:i + 1]) for i in range(100, 400)]
    start = time.perf_counter()
    results = asyncio.run(burst(server.base, bodies, clients=32))
    seconds = time.perf_counter() - start
    server.sent['POST', INFER_ROUTE, 200] += sum(status == 200 for status, _, _ in results)
    assert [status for status, _, _ in results] == [200] * len(bodies)
    after = server.metrics()
    calls = after['tinytorch_batch_size_count', ()] - before['tinytorch_batch_size_count', ()]
    images = after['tinytorch_batch_size_sum', ()] - before['tinytorch_batch_size_sum', ()]
    print(f'\n[serving capability] 300 requests from 32 clients in {seconds:.2f} s: 0 errors, '
          f'{images:.0f} images in {calls:.0f} model calls')
    assert images == len(bodies)
    assert calls < len(bodies), 'dynamic batching should have grouped concurrent requests'


def test_bad_input_gets_4xx_with_a_named_error(server, test_images):
    one = test_images[0][:1]
    good = body_for(one).decode()
    value = str(one.ravel().tolist()[300])
    cases = [
        ('malformed JSON', INFER, b'{"inputs": [', 400, 'malformed JSON'),
        ('not UTF-8', INFER, b'\xff\xfe{}', 400, 'UTF-8'),
        ('missing inputs', INFER, b'{"id": "1"}', 400, "missing the required field 'inputs'"),
        ('missing data', INFER, json.dumps({'inputs': [{'name': 'images', 'shape': [1, 1, 28, 28], 'datatype': 'FP32'}]}).encode(),
         400, "'data'"),
        ('missing shape', INFER, json.dumps({'inputs': [{'name': 'images', 'datatype': 'FP32', 'data': [0.0] * 784}]}).encode(),
         400, "'shape'"),
        ('wrong shape', INFER, body_for(one, shape=[1, 784]), 400, '[N, 1, 28, 28]'),
        ('shape and data disagree', INFER, body_for(one, shape=[2, 1, 28, 28]), 400, 'needs 1568'),
        ('wrong datatype', INFER, body_for(one, datatype='FP16'), 400, "'FP32'"),
        ('strings', INFER, body_for(one, data=['0.5'] * 784), 400, 'strings'),
        ('NaN', INFER, good.replace(value, 'NaN', 1).encode(), 400, 'NaN or infinite'),
        ('Infinity', INFER, good.replace(value, '-Infinity', 1).encode(), 400, 'NaN or infinite'),
        ('too many images', INFER, body_for(np.zeros((257, 1, 28, 28), np.float32)), 413, 'at most 256 images'),
        ('unknown model', '/v2/models/imagenet/infer', good.encode(), 404, "unknown model 'imagenet'"),
        ('unknown version', f'/v2/models/{MODEL_NAME}/versions/999/infer', good.encode(), 404, "version '999'"),
    ]
    routes = {INFER: INFER_ROUTE, '/v2/models/imagenet/infer': INFER_ROUTE,
              f'/v2/models/{MODEL_NAME}/versions/999/infer': '/v2/models/{name}/versions/{version}/infer'}
    for what, path, body, status, words in cases:
        r = server.request('POST', path, routes[path], content=body)
        assert r.status_code == status, (what, r.status_code, r.text)
        assert words in r.json()['error'], (what, r.json())
    # over-size body: 10 MiB against the 8 MiB limit
    big = b'{"inputs": [{"name": "images", "data": [' + b'0.125, ' * ((10 << 20) // 7) + b'0]}]}'
    r = server.request('POST', INFER, INFER_ROUTE, content=big)
    assert r.status_code == 413 and 'limit is 8388608 bytes' in r.json()['error'], r.text
    r = server.request('GET', INFER, INFER_ROUTE)
    assert r.status_code == 405 and 'GET is not allowed' in r.json()['error']
    r = server.request('GET', '/v2/no/such/thing', 'unmatched')
    assert r.status_code == 404 and 'no route' in r.json()['error']
    # a body that stops arriving: the server answers 408 after its (here 1 s) body timeout
    with socket.create_connection(('127.0.0.1', server.port), timeout=10) as sock:
        sock.sendall(f'POST {INFER} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n'
                     f'Content-Length: 1000\r\n\r\n{{"inputs": ['.encode())
        start = time.perf_counter()
        answer = b''
        while not answer.endswith(b'}'):               # headers, then the JSON body (the server closes after it)
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
        answer, waited = answer.decode(), time.perf_counter() - start
    server.sent['POST', INFER_ROUTE, 408] += 1
    assert answer.startswith('HTTP/1.1 408'), answer[:200]
    assert 'did not arrive within 1 s' in answer and 0.5 < waited < 8


def test_hot_swap_under_load_drops_nothing(server, pipeline, test_images):
    registry = ModelRegistry(pipeline.registry_root)
    old = registry.get(MODEL_NAME, stage='production').version
    new = next(mv.version for mv in registry.versions(MODEL_NAME) if mv.version != old)
    bodies = [body_for(test_images[0][i:i + 1]) for i in range(400, 600)]

    async def load_and_promote():
        task = asyncio.create_task(burst(server.base, bodies, clients=8))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(registry.promote, MODEL_NAME, new)
        return await task
    results = asyncio.run(load_and_promote())
    server.sent['POST', INFER_ROUTE, 200] += sum(status == 200 for status, _, _ in results)
    assert [status for status, _, _ in results] == [200] * len(bodies)
    versions = collections.Counter(version for _, version, _ in results)
    print(f'\n[serving capability] hot swap v{old} -> v{new} under load: answers by version {dict(versions)}')
    assert set(versions) <= {str(old), str(new)}
    if versions.get(str(new), 0) == 0:        # a very fast machine finished the burst before the next poll
        time.sleep(1.5)
    meta = server.request('GET', f'/v2/models/{MODEL_NAME}', '/v2/models/{name}').json()
    assert meta['versions'] == [str(new)]
    assert server.metrics()['tinytorch_model_version', (('model', MODEL_NAME),)] == new
    # and back, applied at once through the protocol's repository extension instead of the next poll
    registry.promote(MODEL_NAME, old)
    r = server.request('POST', f'/v2/repository/models/{MODEL_NAME}/load', '/v2/repository/models/{name}/load')
    assert r.status_code == 200 and r.json()['version'] == str(old)
    r = server.request('POST', INFER, INFER_ROUTE, content=bodies[0])
    assert r.json()['model_version'] == str(old)


def test_drift_monitoring_flags_darkened_images(server, test_images):
    """Unseen test images look like the training data; the same kind of images at 60 % brightness do not."""
    x = test_images[0]

    def drift_after(images):
        checks = server.metrics()['tinytorch_drift_checks_total', ()]
        for i in range(0, len(images), 50):
            assert server.request('POST', INFER, INFER_ROUTE, content=body_for(images[i:i + 50])).status_code == 200
        deadline = time.monotonic() + 60         # the check runs in a thread; the detector itself is built after startup
        while time.monotonic() < deadline:
            values = server.metrics()
            if values['tinytorch_drift_checks_total', ()] > checks:
                return (values['tinytorch_drift_p_value', (('model', MODEL_NAME),)],
                        values['tinytorch_drift_detected', (('model', MODEL_NAME),)])
            time.sleep(0.3)
        raise AssertionError(f'no drift check ran within 60 s:\n{server.output()}')
    calm, calm_flag = drift_after(x[600:900])
    dark, dark_flag = drift_after(x[900:1500] * 0.6)
    print(f'\n[serving capability] drift p-value: {calm:.3g} on unseen test images, {dark:.3g} at 60 % brightness')
    assert calm > 1e-4 and calm_flag == 0
    assert dark < 1e-6 and dark_flag == 1


def test_metrics_count_what_was_sent(server):
    values = server.metrics()
    server.sent['GET', '/metrics', 200] -= 1      # the scrape that produced `values` is counted after it answers
    counted = {(dict(k)['method'], dict(k)['route'], int(dict(k)['status'])): v
               for (name, k), v in values.items() if name == 'tinytorch_requests_total'}
    assert counted == {k: v for k, v in server.sent.items() if v}, (counted, server.sent)
    infer_count = values['tinytorch_request_latency_seconds_count', (('route', INFER_ROUTE),)]
    assert infer_count == sum(v for (m, route, _), v in server.sent.items() if route == INFER_ROUTE)
    server.sent['GET', '/metrics', 200] += 1


def test_sigterm_drains_in_flight_requests_and_exits_0(server, test_images):
    bodies = [body_for(test_images[0][:64]) for _ in range(16)]      # 64 images each
    finished = []

    async def load_then_sigterm():
        async def one(body):
            async with httpx.AsyncClient(base_url=server.base, timeout=60) as client:
                r = await client.post(INFER, content=body)
                finished.append((time.perf_counter(), r.status_code))
        tasks = [asyncio.create_task(one(b)) for b in bodies]
        # SIGTERM once the server has received all 16 (a request still in the kernel's accept queue is not in flight)
        async with httpx.AsyncClient(base_url=server.base, timeout=10) as scraper:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                text = (await scraper.get('/metrics')).text
                in_flight = next(s.value for f in text_string_to_metric_families(text) for s in f.samples
                                 if s.name == 'tinytorch_requests_in_flight') - 1     # minus this scrape
                if in_flight + len(finished) >= len(bodies):
                    break
        signalled = time.perf_counter()
        server.proc.send_signal(signal.SIGTERM)
        await asyncio.gather(*tasks)
        return signalled, in_flight
    signalled, in_flight = asyncio.run(load_then_sigterm())
    code = server.proc.wait(timeout=60)
    print(f'\n[serving capability] SIGTERM with {in_flight:.0f} requests in flight: all answered, exit code {code}')
    assert [status for _, status in finished] == [200] * len(bodies)
    assert any(t > signalled for t, _ in finished), 'no request was still in flight at SIGTERM; the drain was not tested'
    assert code == 0, f'exit code {code} after SIGTERM:\n{server.output()}'
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.base + '/v2/health/live', timeout=2)


def test_two_workers_share_the_port_and_their_metrics(pipeline, test_images):
    s = Server('--registry', str(pipeline.registry_root), '--workers', '2')
    try:
        seen, deadline = set(), time.monotonic() + 90     # the second worker may still be importing when the first is ready
        while len(seen) < 2 and time.monotonic() < deadline:
            seen.add(s.request('GET', '/v2/health/ready', '/v2/health/ready').headers['x-tinytorch-worker'])
        assert len(seen) == 2, f'only worker(s) {seen} answered within 90 s'
        bodies = [body_for(test_images[0][i:i + 1]) for i in range(60)]
        results = asyncio.run(burst(s.base, bodies, clients=6, new_connections=True))
        assert [status for status, _, _ in results] == [200] * 60
        workers = {pid for _, _, pid in results}
        for _ in range(3):                 # each scrape may reach either worker: all must show the merged count
            counted = s.metrics()['tinytorch_requests_total', (('method', 'POST'), ('route', INFER_ROUTE), ('status', '200'))]
            assert counted == 60
        print(f'\n[serving capability] --workers 2: answers from {len(workers)} processes, /metrics sums to {counted:.0f}')
        assert len(workers) == 2, f'only worker(s) {workers} answered 60 requests on fresh connections'
        # one promotion in the shared registry reaches every worker
        registry = ModelRegistry(pipeline.registry_root)
        old = registry.get(MODEL_NAME, stage='production').version
        new = next(mv.version for mv in registry.versions(MODEL_NAME) if mv.version != old)
        registry.promote(MODEL_NAME, new)
        try:
            time.sleep(2.5)                    # each worker polls the registry every second
            results = asyncio.run(burst(s.base, bodies[:30], clients=6, new_connections=True))
            assert {(status, version) for status, version, _ in results} == {(200, str(new))}
            assert len({pid for _, _, pid in results}) == 2
        finally:
            registry.promote(MODEL_NAME, old)
    finally:
        code = s.stop()
    assert code == 0, f'exit code {code} after SIGTERM:\n{s.output()}'
