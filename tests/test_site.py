"""The docs site builder (milestones/site.py) and the Progress page (milestones/progress.py).

A tiny throwaway project: an index, a module notebook that works (math, an exported function,
hidden cells and lines, a slow cell, a matplotlib figure made under the Agg backend, a show_doc
of a real tinytorch class), one that fails halfway, and a third module that is not written.
The built-in path runs each notebook once through execnb and renders it with nbdev's processors
and nbconvert; the Quarto path is checked with a stand-in for nbdev_docs.
"""
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import unquote

import pytest

from milestones import progress, site
from milestones.engine import Course
from milestones.states import NEUTRAL, module_look
from milestones.site import build_site, page_name

GIT_URL = 'https://example.org/someone/tiny'


def _nb(*cells):
    out = []
    for kind, src in cells:
        c = dict(cell_type=kind, metadata={}, source=src)
        if kind == 'code': c.update(outputs=[], execution_count=None)
        out.append(c)
    return json.dumps(dict(cells=out, metadata={}, nbformat=4, nbformat_minor=5))


def _make_project(root: Path, git_url: str = GIT_URL) -> Path:
    (root / 'nbs').mkdir(parents=True)
    (root / 'milestones').mkdir()
    (root / 'settings.ini').write_text(
        '[DEFAULT]\nrepo = tiny\nlib_name = tinylib\nlib_path = tinylib\nnbs_path = nbs\ndoc_path = _docs\n'
        f'title = Tiny Course\ndescription = A tiny course\ntst_flags = notest slow\nbranch = main\ngit_url = {git_url}\n'
        'doc_host = https://example.org\ndoc_baseurl = /tiny\nuser = someone\nversion = 0.0.1\ncustom_sidebar = True\n')
    (root / 'milestones' / 'milestones.json').write_text(json.dumps(dict(
        modules=[dict(key='alpha', name='Alpha', notebook='01_alpha.ipynb', package='alpha.py'),
                 dict(key='beta', name='Beta', notebook='02_beta.ipynb', package='beta.py'),
                 dict(key='gamma', name='Gamma', notebook='03_gamma.ipynb', package='gamma.py')],
        milestones=[dict(key='first', name='First Steps', emoji='🧱', modules=['alpha', 'beta', 'gamma'],
                         capability='Can add', capability_test='tests/capability/test_first.py')])))
    (root / 'tinylib').mkdir()
    (root / 'tinylib' / '__init__.py').write_text('')
    log = "open(os.environ['SITE_TEST_RUNLOG'], 'a').write('{}\\n')"
    (root / 'nbs' / 'index.ipynb').write_text(_nb(
        ('markdown', '# Tiny Course\n\nModules: [alpha](01_alpha.ipynb#adding) and [gamma](03_gamma.ipynb) (not written). '
                     'See [functions](https://en.wikipedia.org/wiki/Function_(mathematics)) and [progress](progress.html).'),
        ('code', 'print("home", 6 * 7)')))
    (root / 'nbs' / '01_alpha.ipynb').write_text(_nb(
        ('code', '#| default_exp alpha'),
        ('markdown', '# 01 Alpha\n\n> Adds numbers.\n\nPythagoras: $a^2 + b^2 = c^2$, and\n\n$$\\frac{1}{n}\\sum_i x_i$$'),
        ('markdown', '## Adding'),
        ('code', '#| export\ndef add(a, b):\n    "Add two numbers."\n    return a + b'),
        ('code', f'import os\n{log.format("alpha")}\nprint("two plus three is", add(2, 3))\nsecret = "SECRET LINE"  #| hide_line'),
        ('markdown', '## Internal notes -'),
        ('code', '#| slow\nprint("SLOW" + " CELL RAN")'),
        ('code', '#| hide\nprint("HIDDEN" + " CELL")'),
        ('code', 'os.environ.get("IN_TEST")'),
        ('code', 'import matplotlib\nmatplotlib.use("Agg")\nimport matplotlib.pyplot as plt\n'
                 'fig, ax = plt.subplots()\nax.plot([1, 3, 2])'),
        ('code', 'fig2, ax2 = plt.subplots()\nax2.bar([1, 2], [3, 4])\nfig2'),
        ('code', 'from tinytorch.tensor import Tensor\nfrom nbdev.showdoc import show_doc\nshow_doc(Tensor)')))
    (root / 'nbs' / '02_beta.ipynb').write_text(_nb(
        ('markdown', '# 02 Beta\n\nThis one breaks.'),
        ('code', f'import os\n{log.format("beta")}\nx = 1\nprint("before", x)'),
        ('code', 'raise ZeroDivisionError("deliberate failure for the docs test")'),
        ('code', 'print("after the" + " failure")')))
    return root


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    root = _make_project(tmp_path_factory.mktemp('proj'))
    runlog = root / 'runs.log'
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv('SITE_TEST_RUNLOG', str(runlog))
        mp.setenv('TITO_NBDEV_TEST', f'{sys.executable} -c "raise SystemExit(\'the docs build ran nbdev_test\')"')
        logs = []
        result = build_site(root, use_quarto=False, log=logs.append)
    return SimpleNamespace(root=root, result=result, logs=logs, runlog=runlog)


def _read(root, name): return (root / '_docs' / name).read_text(encoding='utf-8')


def test_pages_and_result(built):
    r = built.result
    assert r.renderer.startswith('built-in')
    assert sorted(p.name for p in r.pages) == ['alpha.html', 'beta.html', 'index.html', 'progress.html']
    assert (built.root / '_docs' / 'site.css').read_text().count('{') > 20
    assert [n for n, _ in r.failures] == ['02_beta.ipynb'] and 'ZeroDivisionError' in r.failures[0][1]
    assert r.exit_code == 1 and '1 failed' in str(r)


def test_each_notebook_ran_once_and_the_progress_page_ran_no_test(built):
    assert sorted(built.runlog.read_text().split()) == ['alpha', 'beta']
    assert not [w for w in built.result.warnings if 'Progress' in w]


def test_module_page(built):
    html = _read(built.root, 'alpha.html')
    assert '<title>01 Alpha · Tiny Course</title>' in html and '>01 Alpha<' in html
    assert html.count('<math') == 2 and 'display="block"' in html and '<mfrac>' in html
    assert '$a^2' not in html and '$$' not in html
    assert 'two plus three is 5' in html and 'SECRET LINE' not in html          # hide_line
    assert 'Internal notes' not in html                                            # rm_header_dash
    assert 'HIDDEN' not in html and 'default_exp' not in html and 'return a + b' not in html   # hide_, rm_export
    assert re.search(r'SLOW(&quot;|")', html) and 'SLOW CELL RAN' not in html   # slow: shown, not run
    assert '&#39;1&#39;' in html or "'1'" in html                                  # ran with IN_TEST=1
    # nbdev's add_show_docs documented the exported function; show_doc's own code is not shown
    assert re.search(r'<h3[^>]*>add', html) and 'Add two numbers.' in html and 'show_doc' not in html
    # both figures, each once: the Agg one nobody displayed, and the one that was the cell's value
    assert html.count('src="data:image/png;base64,') == 2


def test_source_links_come_from_settings_git_url(built, tmp_path):
    html = _read(built.root, 'alpha.html')
    links = re.findall(r'<a class="source-link" href="([^"]+)"', html)
    assert links and all(l.startswith(GIT_URL + '/blob/main/tinytorch/tensor.py#L') for l in links)
    md = '---\n\n[source](https://github.com/x/y/blob/main/tinytorch/tensor.py#L5){target="_blank" style="x"}\n\n### Tensor\n'
    nb = json.loads(_nb(('code', 'show_doc(Tensor)')))
    nb['cells'][0]['outputs'] = [dict(output_type='execute_result', execution_count=1, metadata={},
                                      data={'text/markdown': md, 'text/plain': 'x'})]
    (tmp_path / 'n.ipynb').write_text(json.dumps(nb))
    for url, expected in [('', None), (GIT_URL, GIT_URL + '/blob/main/tinytorch/tensor.py#L5')]:
        _, body = site._notebook_html(tmp_path / 'n.ipynb', site._exporter(lambda u: u), url)
        assert re.findall(r'class="source-link" href="([^"]+)"', body) == ([expected] if expected else [])
        assert 'target=' not in body.replace('target="_blank"', '') and '{' not in re.sub(r'<style.*?</style>', '', body)


def test_failing_notebook_shows_the_error(built):
    html = _read(built.root, 'beta.html')
    assert 'before 1' in html and 'error-box' in html and 'deliberate failure for the docs test' in html
    assert 'ZeroDivisionError' in html and 'after the failure' not in html and 'stopped with an error</strong> in cell 3:' in html
    assert any('02_beta.ipynb' in l and 'FAILED' in l for l in built.logs)


def test_links_sidebar_and_pager(built):
    docs = built.root / '_docs'
    index = _read(built.root, 'index.html')
    assert '<a href="alpha.html#adding">alpha</a>' in index
    assert '<span class="missing-page">gamma</span>' in index
    assert 'href="https://en.wikipedia.org/wiki/Function_(mathematics)"' in index
    assert 'home 42' in index
    for page in docs.glob('*.html'):
        html = page.read_text(encoding='utf-8')
        assert re.search(r'🧱 First Steps</span>\s*<ul>\s*<li class="module"><a href="alpha.html"', html)
        assert 'title="03_gamma.ipynb is not written yet">03 Gamma</span>' in html
        for ref in re.findall(r'(?:href|src)="([^"]+)"', html):
            if re.match(r'^(https?:|data:|#)', ref): continue
            path, _, anchor = ref.partition('#')
            assert (docs / unquote(path)).is_file(), f'{page.name} links to {ref}, which does not exist'
            assert not anchor or f'id="{anchor}"' in (docs / path).read_text(encoding='utf-8'), ref
    alpha = _read(built.root, 'alpha.html')
    assert 'class="current">01 Alpha</a>' in alpha and '← Tiny Course' in alpha and '02 Beta →' in alpha


def test_progress_page(built):
    html = _read(built.root, 'progress.html')
    assert '<img src="timeline.svg" alt="TinyTorch milestone timeline"' in html
    assert html.count('<svg class="bar"') == 2 and 'aria-label="0 of 3 modules pass"' in html
    assert '<a href="alpha.html">Alpha</a>' in html and '<a href="gamma.html"' not in html   # no dead links
    assert '❔ not tested yet' in html and '⏳ not present' in html
    assert (built.root / '_docs' / 'timeline.svg').read_text().startswith('<?xml')


def test_second_build_uses_the_cache_but_reruns_failures(built, monkeypatch):
    monkeypatch.setenv('SITE_TEST_RUNLOG', str(built.runlog))
    built.runlog.unlink()
    logs = []
    build_site(built.root, use_quarto=False, log=logs.append)
    line = {l.split()[0]: l for l in logs if l.startswith('  ')}
    assert 'cached' in line['01_alpha.ipynb'] and 'cached' in line['index.ipynb']
    assert 'FAILED' in line['02_beta.ipynb'] and built.runlog.read_text().split() == ['beta']


def test_quarto_path_gives_nbdev_docs_executed_notebooks_sidebar_and_progress(built, tmp_path, monkeypatch):
    root = built.root
    (root / 'README.md').write_text('the lead wrote this\n')
    fake = tmp_path / 'fake_nbdev_docs.py'   # stands in for nbdev_docs: records what it was given
    fake.write_text(
        'import json, sys\nfrom pathlib import Path\nsrc = Path(sys.argv[sys.argv.index("--path") + 1])\n'
        'nb = json.loads((src / "01_alpha.ipynb").read_text())\n'
        'seen = dict(files=sorted(p.name for p in src.iterdir()), outputs=sum(len(c.get("outputs", [])) for c in nb["cells"]),\n'
        '            sidebar=(src / "sidebar.yml").read_text(), progress=(src / "progress.md").read_text())\n'
        'Path("seen.json").write_text(json.dumps(seen))\nPath("_docs").mkdir(exist_ok=True)\n'
        'Path("_docs/index.html").write_text("quarto home")\nPath("README.md").write_text("generated")\n')
    monkeypatch.setattr(site, '_nbdev_docs_command', lambda: [sys.executable, str(fake)])
    monkeypatch.setenv('SITE_TEST_RUNLOG', str(built.runlog))
    result = build_site(root, use_quarto=True, log=lambda *_: None)
    assert result.renderer.startswith('quarto') and [n for n, _ in result.failures] == ['02_beta.ipynb']
    seen = json.loads((root / 'seen.json').read_text())
    assert {'01_alpha.ipynb', '02_beta.ipynb', 'index.ipynb', '_quarto.yml', 'nbdev.yml', 'sidebar.yml',
            'progress.md', 'timeline.svg'} <= set(seen['files'])
    assert seen['outputs'] >= 5                                   # published pages carry the outputs
    assert seen['sidebar'] == (root / 'nbs' / 'sidebar.yml').read_text()
    assert ('      - section: "🧱 First Steps"\n        contents:\n          - 01_alpha.ipynb\n'
            '          - 02_beta.ipynb\n      - progress.md') in seen['sidebar']           # gamma is not written
    assert '# Progress' in seen['progress'] and '[Alpha](01_alpha.ipynb)' in seen['progress']
    assert (root / 'README.md').read_text() == 'the lead wrote this\n'
    assert (root / '_docs' / 'index.html').read_text() == 'quarto home'


# ------------------------------------------------------------------------------- units

def test_page_names_follow_nbdev():
    assert page_name('02_tensor.ipynb') == 'tensor.html'
    assert page_name('index.ipynb') == 'index.html'
    assert page_name('10a_Extra_Things.ipynb') == 'extra_things.html'


def test_progress_colours_any_state_and_bars_count_passing(tmp_path):
    root = _make_project(tmp_path / 'p')
    course = Course(root)
    st = lambda key, state: SimpleNamespace(key=key, state=state, icon='?', reason=f'{state} | why')
    states = {'alpha': st('alpha', 'pass'), 'beta': st('beta', 'quantum_flux'), 'gamma': st('gamma', 'absent')}
    ms = SimpleNamespace(milestone=course.milestones[0], modules=list(states.values()), unlocked=None,
                         state='brand_new', icon='!', passing=1, total=3, percent=33)
    md = progress.progress_markdown(course, states, [ms])
    assert f'fill="{module_look("pass").hex}"><title>tests pass</title>' in md
    assert f'fill="{NEUTRAL.hex}"><title>quantum flux</title>' in md      # unknown: neutral, by its name
    assert '| First Steps | ! unknown | 33% <svg' in md and 'aria-label="1 of 3 modules pass"' in md
    assert 'quantum_flux &#124; why' in md                                      # a | in a reason keeps the table
    svg = progress.draw_timeline_svg(course, [ms]).decode()
    assert 'quantum flux' in svg and 'tests pass' in svg and NEUTRAL.hex in svg
