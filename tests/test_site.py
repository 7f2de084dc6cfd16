"""The docs site builder (milestones/site.py) on a tiny throwaway project.

The project has an index notebook, a module notebook that works (exports a function, prints,
calls show_doc) and one that fails halfway. The built-in renderer must execute them, turn
them into pages with the prose, code, outputs and API docs, show the failure in a box, list it
in the summary, and link every page with relative links that resolve on disk.
"""
import json
import re
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from milestones import site
from milestones.site import build_site, page_name, render_markdown, render_inline


def _nb(*cells):
    out = []
    for kind, src in cells:
        c = dict(cell_type=kind, metadata={}, source=src)
        if kind == 'code': c.update(outputs=[], execution_count=None)
        out.append(c)
    return dict(cells=out, metadata={}, nbformat=4, nbformat_minor=5)


def _make_project(root: Path) -> Path:
    (root / 'nbs').mkdir(parents=True)
    (root / 'milestones').mkdir()
    (root / 'settings.ini').write_text('[DEFAULT]\nlib_name = tinylib\nlib_path = tinylib\nnbs_path = nbs\n'
                                       'doc_path = _docs\ntitle = Tiny Course\ntst_flags = notest|slow\n')
    (root / 'milestones' / 'milestones.json').write_text(json.dumps(dict(
        modules=[dict(key='alpha', name='Alpha', notebook='01_alpha.ipynb', package='alpha.py'),
                 dict(key='beta', name='Beta', notebook='02_beta.ipynb', package='beta.py'),
                 dict(key='gamma', name='Gamma', notebook='03_gamma.ipynb', package='gamma.py')],
        milestones=[dict(key='first', name='First Steps', emoji='🧱', modules=['alpha', 'beta', 'gamma'])])))
    index = _nb(('markdown', '# Tiny Course\n\nA course in **two** modules: [alpha](01_alpha.ipynb), '
                             '[beta](02_beta.ipynb) and [gamma](03_gamma.ipynb) (not written).\n\n'
                             'See [progress](progress.html).'),
                ('code', 'print("home", 6 * 7)'))
    alpha = _nb(('code', '#| default_exp alpha'),
                ('markdown', '# 01 Alpha\n\nAdds numbers.\n\n## Adding\n\n| a | b | a+b |\n|---|---|--:|\n| 2 | 3 | 5 |\n\n'
                             '- one\n- two\n  - nested'),
                ('code', '#| export\ndef add(a, b):\n    "Add two numbers."\n    return a + b\n\n'
                         'def scale(x, k=2):\n    "Multiply `x` by `k`."\n    return x * k'),
                ('code', 'from nbdev.showdoc import show_doc\nshow_doc(add)'),
                ('code', 'print("two plus three is", add(2, 3))'),
                ('code', '#| slow\nprint("SLOW CELL RAN")'),
                ('code', '#| hide\nprint("HIDDEN CELL")'),
                ('code', 'import os\nos.environ.get("IN_TEST")'),
                ('code', 'from IPython.display import HTML\nHTML("<b id=\'raw-html\'>bold html</b>")'))
    beta = _nb(('markdown', '# 02 Beta\n\nThis one breaks.'),
               ('code', 'x = 1\nprint("before", x)'),
               ('code', 'raise ZeroDivisionError("deliberate failure for the docs test")'),
               ('code', 'print("after the failure")'))
    for name, nb in [('index.ipynb', index), ('01_alpha.ipynb', alpha), ('02_beta.ipynb', beta)]:
        (root / 'nbs' / name).write_text(json.dumps(nb))
    return root


def _fake_progress(out_dir):
    out_dir = Path(out_dir)
    md, svg = out_dir / 'progress.md', out_dir / 'timeline.svg'
    md.write_text('# Progress\n\n![timeline](timeline.svg)\n\n| Milestone | State |\n|---|---|\n| First Steps | 🔄 50% |\n')
    svg.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>')
    return md, svg


@pytest.fixture(scope='module')
def built(tmp_path_factory):
    root = _make_project(tmp_path_factory.mktemp('proj'))
    logs = []
    result = build_site(root, use_quarto=False, progress_writer=_fake_progress, jobs=2, log=logs.append)
    return root, result, logs


def _read(root, name): return (root / '_docs' / name).read_text(encoding='utf-8')


def test_pages_written(built):
    root, result, _ = built
    assert result.renderer == 'built-in'
    assert sorted(p.name for p in result.pages) == ['alpha.html', 'beta.html', 'index.html', 'progress.html']
    assert (root / '_docs' / 'assets' / 'site.css').read_text().count('{') > 10


def test_home_page(built):
    root, _, _ = built
    html = _read(root, 'index.html')
    assert '<h1 id="tiny-course">Tiny Course</h1>' in html
    assert '<strong>two</strong>' in html
    assert '<a href="alpha.html">alpha</a>' in html            # notebook links become page links
    assert 'class="missing-link"' in html and '>gamma</span>' in html   # no dead link to a missing module
    assert '<pre>home 42</pre>' in html                         # the code ran, its output is there


def test_module_page_content(built):
    root, _, _ = built
    html = _read(root, 'alpha.html')
    assert '<h1 id="01-alpha">01 Alpha</h1>' in html and '<h2 id="adding">Adding</h2>' in html
    assert '<th style="text-align:right">a+b</th>' in html and '<td style="text-align:right">5</td>' in html
    assert re.search(r'<li>two\s*<ul>\s*<li>nested</li>', html)
    assert '<pre>two plus three is 5</pre>' in html
    assert "<pre>&#x27;1&#x27;</pre>" in html or "<pre>'1'</pre>" in html   # IN_TEST was set while executing
    assert "<b id='raw-html'>bold html</b>" in html            # text/html outputs go in as HTML
    # API docs: the explicit show_doc(add), and one nbdev-style for `scale`, which had none
    assert '<h3 id="add">add</h3>' in html and 'Add two numbers.' in html
    assert '<h3 id="scale">scale</h3>' in html and 'Multiply <code>x</code> by <code>k</code>' in html
    assert 'exported to <code>tinylib/alpha.py</code>' in html
    assert 'HIDDEN CELL' not in html and 'default_exp' not in html
    assert '<pre>SLOW CELL RAN</pre>' not in html and 'not run when building the docs' in html
    assert 'nbdev.showdoc' not in html                           # show_doc cells show output, not source


def test_failing_notebook_is_rendered_with_the_error(built):
    root, result, logs = built
    html = _read(root, 'beta.html')
    assert '<pre>before 1</pre>' in html
    assert 'class="error-box"' in html and 'ZeroDivisionError' in html and 'deliberate failure' in html
    assert html.count('Traceback (most recent call last)') == 1  # once, inside the box
    assert 'class="warning-box"' in html and 'cell 3' in html
    assert 'after the failure' in html and 'not run: an earlier cell failed' in html
    assert [name for name, _ in result.failures] == ['02_beta.ipynb']
    assert not result.ok and result.exit_code == 1
    assert 'WARNING: 1 notebook(s) failed' in result.summary()
    assert any('02_beta.ipynb' in line and 'FAILED' in line for line in logs)


def test_sidebar_groups_by_milestone_and_links_resolve(built):
    root, _, _ = built
    docs = root / '_docs'
    for page in docs.glob('*.html'):
        html = page.read_text(encoding='utf-8')
        assert '🧱 First Steps' in html
        assert 'title="03_gamma.ipynb is not written yet"' in html
        for ref in re.findall(r'(?:href|src)="([^"]+)"', html):
            if re.match(r'^(https?:|data:|#|mailto:)', ref): continue
            target = docs / unquote(ref.split('#')[0])
            assert target.exists(), f'{page.name} links to {ref}, which does not exist'
    alpha = (docs / 'alpha.html').read_text(encoding='utf-8')
    assert '<a href="alpha.html" class="current">01 Alpha</a>' in alpha
    assert '<a href="#adding">Adding</a>' in alpha              # the page's own sections in the sidebar
    assert '← Tiny Course' in alpha and 'Beta →' in alpha       # pager


def test_progress_page(built):
    root, _, _ = built
    html = _read(root, 'progress.html')
    assert '<img src="timeline.svg" class="timeline"' in html
    assert '<td>First Steps</td><td>🔄 50%</td>' in html


def test_second_build_uses_the_cache_but_reruns_failures(built):
    root, _, _ = built
    logs = []
    result = build_site(root, use_quarto=False, progress_writer=_fake_progress, jobs=2, log=logs.append)
    line = {l.split()[0]: l for l in logs if l.startswith('  ')}
    assert 'cached' in line['01_alpha.ipynb'] and 'cached' in line['index.ipynb']
    assert 'FAILED' in line['02_beta.ipynb'] and 'cached' not in line['02_beta.ipynb']
    assert '<pre>two plus three is 5</pre>' in _read(root, 'alpha.html')
    assert result.exit_code == 1


def test_progress_engine_missing(tmp_path, monkeypatch):
    root = tmp_path / 'p'
    (root / 'nbs').mkdir(parents=True)
    (root / 'nbs' / 'index.ipynb').write_text(json.dumps(_nb(('markdown', '# Home'))))
    monkeypatch.setitem(sys.modules, 'milestones.progress', None)   # import now raises ImportError
    monkeypatch.setitem(sys.modules, 'milestones.engine', None)
    result = build_site(root, use_quarto=False, log=lambda *_: None)
    html = (root / '_docs' / 'progress.html').read_text(encoding='utf-8')
    assert 'progress engine' in html and 'not available' in html
    assert any('not available' in w for w in result.warnings)
    assert result.exit_code == 0                                  # a missing engine is a warning, not a failure


def test_no_index_notebook_still_gives_a_home_page(tmp_path):
    root = tmp_path / 'p'
    (root / 'nbs').mkdir(parents=True)
    (root / 'nbs' / '05_solo.ipynb').write_text(json.dumps(_nb(('markdown', '# Solo page'))))
    result = build_site(root, use_quarto=False, progress_writer=_fake_progress, log=lambda *_: None)
    home = (root / '_docs' / 'index.html').read_text(encoding='utf-8')
    assert '<a href="solo.html">Solo page</a>' in home
    assert any('index.ipynb' in w for w in result.warnings)


def test_quarto_path_runs_nbdev_docs_keeps_readme_and_adds_progress(tmp_path, monkeypatch):
    root = tmp_path / 'p'
    (root / 'nbs').mkdir(parents=True)
    (root / 'README.md').write_text('the lead wrote this\n')
    fake = tmp_path / 'fake_nbdev_docs.py'      # stands in for nbdev_docs: renders, and rewrites README.md
    fake.write_text('from pathlib import Path\nPath("_docs").mkdir(exist_ok=True)\n'
                    'Path("_docs/index.html").write_text("<html>quarto home</html>")\n'
                    'Path("README.md").write_text("generated from index.ipynb")\n')
    monkeypatch.setattr(site, '_nbdev_docs_command', lambda: [sys.executable, str(fake)])
    result = build_site(root, use_quarto=True, progress_writer=_fake_progress, log=lambda *_: None)
    assert result.renderer == 'quarto' and result.ok
    assert (root / 'README.md').read_text() == 'the lead wrote this\n'
    assert (root / '_docs' / 'index.html').read_text() == '<html>quarto home</html>'
    progress = (root / '_docs' / 'progress.html').read_text(encoding='utf-8')
    assert 'timeline.svg' in progress and '<a href="index.html">' in progress


# ---------------------------------------------------------------------------------- renderer units

def test_page_names_follow_nbdev():
    assert page_name('02_tensor.ipynb') == 'tensor.html'
    assert page_name('index.ipynb') == 'index.html'
    assert page_name('10a_Extra_Things.ipynb') == 'extra_things.html'


def test_markdown_blocks():
    html = render_markdown('# Title\n\nText with `a < b` and 1 < 2 & 3.\n\n```python\nx = [1, 2]\n```\n\n'
                           '1. one\n2. two\n\n> quoted\n\n---\n\nSub\n---\n')
    assert '<h1 id="title">Title</h1>' in html
    assert '<code>a &lt; b</code>' in html and '1 &lt; 2 &amp; 3' in html
    assert '<pre class="code highlight"><code class="language-python">' in html and 'x' in html
    assert '<ol>\n<li>one</li>\n<li>two</li>\n</ol>' in html
    assert '<blockquote><p>quoted</p></blockquote>' in html
    assert '<hr>' in html and '<h2 id="sub">Sub</h2>' in html


def test_markdown_inline():
    assert render_inline('**b** *i* _j_ snake_case_name') == '<strong>b</strong> <em>i</em> <em>j</em> snake_case_name'
    assert render_inline('[x](02_tensor.ipynb#ops)', site._Ctx({'02_tensor.ipynb': 'tensor.html'})) == \
        '<a href="tensor.html#ops">x</a>'
    assert render_inline('see <https://example.org>') == 'see <a href="https://example.org">https://example.org</a>'
    assert render_inline('<script>alert(1)</script>') == '&lt;script&gt;alert(1)&lt;/script&gt;'
    assert render_inline('cost is $x^2$') == 'cost is <span class="math">\\(x^2\\)</span>'   # MathJax delimiters
    assert render_inline(r'a \*literal\* star') == 'a *literal* star'


def test_table_with_escaped_pipes():
    html = render_markdown('| type | default |\n|---|---|\n| int \\| None | None |')
    assert '<td>int | None</td><td>None</td>' in html


def test_quarto_failure_falls_back_to_the_builtin_renderer(tmp_path, monkeypatch):
    root = tmp_path / 'p'
    (root / 'nbs').mkdir(parents=True)
    (root / 'nbs' / 'index.ipynb').write_text(json.dumps(_nb(('markdown', '# Home page'))))
    monkeypatch.setattr(site, '_nbdev_docs_command', lambda: [sys.executable, '-c', 'raise SystemExit(3)'])
    result = build_site(root, use_quarto=True, progress_writer=_fake_progress, log=lambda *_: None)
    assert result.renderer == 'built-in' and result.ok
    assert any('nbdev_docs (Quarto) failed (exit code 3)' in w for w in result.warnings)
    assert '<h1 id="home-page">Home page</h1>' in (root / '_docs' / 'index.html').read_text(encoding='utf-8')
