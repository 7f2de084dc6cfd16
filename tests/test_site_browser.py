"""The real docs site, built from this repository's notebooks, opened in headless Debian chromium.

Playwright (Python) drives the system's /usr/bin/chromium; no browser is downloaded. Each page
must load without console errors or any request off the machine, show no raw TeX, load every image and SVG, link only to files
(and anchors) that exist, and carry the sidebar with every module under its milestone.
Full-page screenshots go to build/browser-test/ (set TINYTORCH_ARTIFACTS to change).
"""
import json
import os
import re
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from milestones.site import build_site

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get('TINYTORCH_ARTIFACTS', ROOT / 'build' / 'browser-test'))
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run']
PAGES = ['index.html', 'tensor.html', 'optimizers.html', 'training.html', 'progress.html']
RAW_TEX = re.compile(r'\\\(|\\\[|\$\$|\\(?:frac|sum|sqrt|log|leftarrow|mathbf|begin)\b|(?<!\w)\$[^$\s][^$\n]{0,80}?[^$\s\\]\$(?!\w)')


@pytest.fixture(scope='module')
def browser():
    if CHROMIUM is None:
        pytest.skip('chromium is not installed, so the docs cannot be checked in a browser: '
                    'apt-get install chromium (Debian), then rerun')
    sync_api = pytest.importorskip('playwright.sync_api', reason='playwright is missing: run `make install`')
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope='module')
def site(browser, tmp_path_factory):
    out = tmp_path_factory.mktemp('site')
    result = build_site(ROOT, out, use_quarto=False, log=lambda *_: None)
    assert result.ok, str(result)
    return out


def _open(browser, site, page):
    tab = browser.new_page(viewport={'width': 1280, 'height': 900})
    errors, failed, remote = [], [], []
    tab.on('console', lambda m: errors.append(m.text) if m.type == 'error' else None)
    tab.on('pageerror', lambda e: errors.append(str(e)))
    tab.on('requestfailed', lambda r: failed.append(r.url[:120]))
    tab.on('request', lambda r: None if r.url.startswith(('file:', 'data:')) else remote.append(r.url[:120]))
    tab.goto((site / page).as_uri(), wait_until='load')
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tab.screenshot(path=str(ARTIFACTS / page.replace('.html', '.png')), full_page=True)
    return tab, errors, failed, remote


@pytest.mark.parametrize('page', PAGES)
def test_page_in_browser(browser, site, page):
    tab, errors, failed, remote = _open(browser, site, page)
    assert not errors, f'console errors on {page}: {errors}'
    assert not failed, f'requests that failed on {page}: {failed}'
    assert not remote, f'{page} fetches from the network, so it breaks offline: {remote}'
    text = tab.evaluate('() => { const b = document.body.cloneNode(true); '   # prose only: code may hold "$" or "\\("
                        'b.querySelectorAll("pre, code").forEach(e => e.remove()); return b.innerText }')
    assert not RAW_TEX.findall(text), f'raw TeX left in the text of {page}: {RAW_TEX.findall(text)[:5]}'

    broken = tab.evaluate('() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0)'
                          '.map(i => i.getAttribute("src").slice(0, 80))')
    assert not broken, f'images that did not load on {page}: {broken}'
    flat = tab.evaluate('() => [...document.querySelectorAll("svg, math")].filter(e => { const r = '
                        'e.getBoundingClientRect(); return r.width === 0 || r.height === 0 }).length')
    assert flat == 0, f'{flat} SVG or MathML elements on {page} render with no size'

    for href in tab.evaluate('() => [...document.querySelectorAll("a[href]")].map(a => a.href)'):
        url = urlparse(href)
        if url.scheme != 'file': continue
        target = Path(unquote(url.path))
        assert target.is_file(), f'{page} links to {href}, which does not exist'
        if url.fragment:
            assert f'id="{unquote(url.fragment)}"' in target.read_text(encoding='utf-8'), \
                f'{page} links to {href}, but {target.name} has no element with that id'

    course = json.loads((ROOT / 'milestones' / 'milestones.json').read_text(encoding='utf-8'))
    sidebar = tab.evaluate('() => [...document.querySelectorAll("nav.sidebar li.milestone")].map(li => '
                           '[li.querySelector(".milestone-name").innerText, '
                           '[...li.querySelectorAll("li.module")].map(m => m.innerText)])')
    assert [name.split(' ', 1)[-1] for name, _ in sidebar] == [ms['name'] for ms in course['milestones']]
    names = [m['name'] for m in course['modules']]
    assert [m for _, mods in sidebar for m in mods] == [f'{i:02d} {n}' for i, n in enumerate(names, 1)]
    assert len(sidebar) == 5 and sum(len(mods) for _, mods in sidebar) == 16


def test_module_pages_show_plots_and_math(browser, site):
    for page, plots in [('optimizers.html', 2), ('training.html', 2)]:   # schedules + comparison; learning curves
        tab, *_ = _open(browser, site, page)
        assert tab.locator('.output_png img').count() >= plots, f'{page} should show {plots}+ matplotlib figures'
        assert tab.locator('math').count() > 5, f'{page} should render its formulas as MathML'
    tab, *_ = _open(browser, site, 'progress.html')
    assert tab.locator('img[src="timeline.svg"]').count() == 1
    assert tab.locator('svg.bar').count() == 6   # overall + one per milestone
