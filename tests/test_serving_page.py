"""The server's web page at `/`, driven in a real browser: Debian's headless Chromium via Playwright.

A person picks a Fashion-MNIST test image, clicks another, draws one, uploads a picture and asks for a
random one; after each, the top-3 classes on the page must be exactly what the server answers for the
pixels the page sent (checked with a separate HTTP client). The live chart must plot throughput from
/metrics. Any console error or uncaught page error fails the test. A screenshot is saved to
test-artifacts/serving_page.png.

Serves a seeded, untrained CNN from a checkpoint file, so this test needs no training; Fashion-MNIST
test images fill the gallery when the dataset is installed (`apt-get install dataset-fashion-mnist`).
Needs Debian's chromium (`apt-get install chromium`) and the playwright package (make install);
never downloads a browser.
"""
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

httpx = pytest.importorskip('httpx', reason='the serve extra is not installed: run `make install`')
sync_api = pytest.importorskip('playwright.sync_api', reason='playwright is not installed: run `make install`')

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / 'test-artifacts'
CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
         '--disable-sync', '--no-first-run']


def write_png(path: Path, grey: np.ndarray) -> Path:
    """A greyscale 8-bit PNG, written by hand (zlib + CRCs) so the test needs no imaging library."""
    h, w = grey.shape
    raw = b''.join(b'\x00' + row.tobytes() for row in grey.astype(np.uint8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 8, 0, 0, 0, 0))
                     + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))
    return path


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed: `apt-get install chromium` (the test never downloads a browser)")
    from tinytorch.tensor import manual_seed
    from tinytorch.training import fashion_cnn, save_checkpoint
    manual_seed(0)
    checkpoint = save_checkpoint(tmp_path_factory.mktemp('model') / 'cnn.npz', fashion_cnn())
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, '-m', 'tinytorch.capstone', '--port', str(port), '--model', checkpoint,
                             '--log-level', 'warning'], cwd=ROOT, stdin=subprocess.DEVNULL)
    base = f'http://127.0.0.1:{port}'
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f'the server exited with {proc.returncode}'
        try:
            if httpx.get(base + '/v2/health/ready', timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail('the server was not ready within 60 s')
    yield base
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0


def shown_top3(page) -> list:
    return page.eval_on_selector_all(
        '#top3 .bar', 'rows => rows.map(r => [r.querySelector(".name").textContent, r.querySelector(".pct").textContent])')


def check_top3(page, base: str, classes: list) -> np.ndarray:
    """The page's top-3 rows equal the server's answer for the exact request the page sent; returns its pixels."""
    sent = page.evaluate('window.tinytorch.lastRequest')
    r = httpx.post(f'{base}/v2/models/fashion-mnist/infer', json=sent, timeout=30)
    assert r.status_code == 200, r.text
    probs = np.array(r.json()['outputs'][0]['data'])
    top = np.argsort(-probs, kind='stable')[:3]
    rows = shown_top3(page)
    assert [name for name, _ in rows] == [classes[i] for i in top], (rows, probs)
    for (_, pct), i in zip(rows, top):
        assert pct.endswith(' %') and abs(float(pct[:-2]) - 100 * probs[i]) <= 0.051, (pct, probs[i])
    return np.array(sent['inputs'][0]['data'], np.float32).reshape(28, 28)


def answered(page, n: int):
    page.wait_for_function(f'window.tinytorch && window.tinytorch.answered >= {n}', timeout=60000)


def test_page_in_headless_chromium(server, tmp_path):
    classes = httpx.get(f'{server}/v2/models/fashion-mnist').json()['parameters']['classes']
    problems = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True, chromium_sandbox=False)
        try:
            page = browser.new_page(viewport={'width': 1280, 'height': 1000})
            page.on('console', lambda m: problems.append(f'console.{m.type}: {m.text}') if m.type == 'error' else None)
            page.on('pageerror', lambda e: problems.append(f'uncaught error: {e}'))
            page.goto(server + '/')
            page.wait_for_function('window.tinytorch && window.tinytorch.galleryLoaded', timeout=60000)
            assert 'fashion-mnist version 1' in page.text_content('#model')
            examples = page.evaluate('window.tinytorch.examples')
            step = 0
            if examples:                                   # Fashion-MNIST is installed on the server
                answered(page, 1)                          # the first test image is picked on load
                step = 1
                pixels = check_top3(page, server, classes)
                np.testing.assert_allclose(pixels.ravel(), np.array(examples[0]['pixels']) / 255, atol=1e-7)
                assert page.text_content('#truth') == f"true class: {examples[0]['class']}"
                page.locator('#gallery canvas').nth(5).click()
                answered(page, 2)
                step = 2
                pixels = check_top3(page, server, classes)
                np.testing.assert_allclose(pixels.ravel(), np.array(examples[5]['pixels']) / 255, atol=1e-7)
                assert page.locator('#gallery canvas.sel').get_attribute('data-index') == str(examples[5]['index'])
            else:
                assert 'not installed' in page.text_content('#gallery')

            # draw a tall stroke, like a pair of trousers, on a cleared pad
            page.click('#clear')
            box = page.locator('#pad').bounding_box()
            for x in (0.4, 0.6):
                page.mouse.move(box['x'] + box['width'] * 0.5, box['y'] + box['height'] * 0.15)
                page.mouse.down()
                for k in range(1, 11):
                    page.mouse.move(box['x'] + box['width'] * (0.5 + (x - 0.5) * k / 10),
                                    box['y'] + box['height'] * (0.15 + 0.7 * k / 10))
                page.mouse.up()
                step += 1
                answered(page, step)
            drawn = check_top3(page, server, classes)
            assert drawn.max() > 0.9 and drawn[0, 0] == 0 and 0.03 < drawn.mean() < 0.5, drawn.mean()

            # upload a photo-like picture: a dark bag shape on a light background, 3x the model's size
            picture = np.full((84, 84), 235, np.uint8)
            picture[20:75, 12:72] = 40
            picture[8:22, 30:54] = 40
            picture[12:20, 36:48] = 235
            page.set_input_files('#upload', str(write_png(tmp_path / 'bag.png', picture)))
            step += 1
            answered(page, step)
            uploaded = check_top3(page, server, classes)
            assert uploaded[0, 0] < 0.1 and uploaded[14, 14] > 0.7, 'a light picture is inverted to light-on-dark'

            if examples:
                page.click('#random')
                step += 1
                answered(page, step)
                check_top3(page, server, classes)

            # the live chart: traffic shows up as throughput within a few scrapes
            for _ in range(30):
                httpx.post(f'{server}/v2/models/fashion-mnist/infer', json=page.evaluate('window.tinytorch.lastRequest'))
            page.wait_for_function('window.tinytorch.points.some(p => p.rate > 0 && p.latency !== null)', timeout=60000)
            assert 'req/s' in page.text_content('#live') and 'inference requests so far' in page.text_content('#live')
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / 'serving_page.png'
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            print(f'\nscreenshot: {shot}')
        finally:
            browser.close()
    assert not problems, 'the page logged errors:\n' + '\n'.join(problems)
