"""Shared pytest fixtures: a tiny fake TinyTorch project for the `tito` CLI tests.

Used by tests/test_cli.py and tests/test_milestones_*.py (the capability tests under
tests/capability/ do not use anything here). The fake project has the real layout
(settings.ini, milestones/milestones.json, nbs/, tinytorch/, tests/capability/) but four
one-cell notebooks, so the milestone system can be tested in seconds:

  01_alpha  passes                          (milestone "first")
  02_beta   passes, imports tinytorch.alpha (milestone "first")
  03_gamma  fails, imports tinytorch.beta   (milestone "second"; beta.py imports .alpha)
  04_delta  absent                          (milestone "second")

Each module has protected tests in tests/modules/ (run with the real pytest). By default notebooks
run under a fake notebook runner (TITO_NBRUN) that executes the code cells in ~50 ms, writes the
same JSON report as milestones/nbrun.py and logs each run to `runs.log`, so tests can count exactly
which notebooks were re-tested. `use_real_runner()` switches back to milestones.nbrun.
"""
import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

FAKE_NBRUN = r"""
# Stand-in for milestones.nbrun in tito's tests: run a notebook's code cells, write the same JSON report.
import json, linecache, os, sys, traceback
nb_path = sys.argv[1]
report = sys.argv[sys.argv.index('--report') + 1]
root = sys.argv[sys.argv.index('--root') + 1]
log = os.environ.get('TITO_FAKE_LOG')
if log:
    with open(log, 'a') as f:
        f.write(os.path.basename(nb_path) + '\n')
nb = json.load(open(nb_path, encoding='utf-8'))
sys.path.insert(0, root)
ns = {'__name__': '__main__'}
res = {'cells': 0, 'cells_run': 0, 'skipped': 0, 'test_cells': 0, 'test_cells_run': 0, 'error': None}
for i, cell in enumerate(nb['cells'], 1):
    if cell['cell_type'] != 'code':
        continue
    src = ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
    is_test = not src.lstrip().startswith('#| export')
    res['cells'] += 1
    res['test_cells'] += is_test
    if res['error']:
        continue
    name = f'<ipython-input-{i}-fake>'
    linecache.cache[name] = (len(src), None, src.splitlines(True), name)
    try:
        exec(compile(src, name, 'exec'), ns)
        res['cells_run'] += 1
        res['test_cells_run'] += is_test
    except Exception as e:
        res['error'] = {'cell': i, 'type': type(e).__name__, 'message': str(e), 'traceback': traceback.format_exc()}
lib = os.path.join(os.path.realpath(root), 'tinytorch') + os.sep
res['loaded'] = sorted(os.path.relpath(os.path.realpath(m.__file__), root) for n, m in list(sys.modules.items())
                       if n.split('.')[0] == 'tinytorch' and getattr(m, '__file__', None)
                       and os.path.realpath(m.__file__).startswith(lib))
res['data_files'] = []
json.dump(res, open(report, 'w'))
sys.exit(1 if res['error'] else 0)
"""

MODULES = [
    {'key': 'alpha', 'name': 'Alpha', 'notebook': '01_alpha.ipynb', 'package': 'alpha.py'},
    {'key': 'beta', 'name': 'Beta', 'notebook': '02_beta.ipynb', 'package': 'beta.py'},
    {'key': 'gamma', 'name': 'Gamma', 'notebook': '03_gamma.ipynb', 'package': 'gamma.py'},
    {'key': 'delta', 'name': 'Delta', 'notebook': '04_delta.ipynb', 'package': 'delta.py'},
]
MILESTONES = [
    {'key': 'first', 'name': 'First Steps', 'short': 'First', 'emoji': '🧱', 'modules': ['alpha', 'beta'],
     'capability': 'Can add numbers', 'i_can': ['I can add', 'I can import what I built'],
     'capability_test': 'tests/capability/test_first.py'},
    {'key': 'second', 'name': 'Second Wind', 'short': 'Second', 'emoji': '🏗️', 'modules': ['gamma', 'delta'],
     'capability': 'Can do more', 'i_can': ['I can do more'],
     'capability_test': 'tests/capability/test_second.py'},
]


def notebook(*cells: str, default_exp: str | None = None) -> str:
    """Minimal nbformat-4 JSON, laid out the way nbdev_clean leaves it."""
    srcs = ([f'#| default_exp {default_exp}'] if default_exp else []) + list(cells)
    nb = {'cells': [{'cell_type': 'code', 'execution_count': None, 'metadata': {}, 'outputs': [],
                     'source': src.splitlines(True)} for src in srcs],
          'metadata': {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}},
          'nbformat': 4, 'nbformat_minor': 5}
    return json.dumps(nb, indent=1, ensure_ascii=False) + '\n'


class FakeProject:
    def __init__(self, root: Path, log: Path):
        self.root, self.log = root, log

    def write(self, rel: str, text: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding='utf-8')
        return p

    def runs(self) -> list[str]:
        """Notebooks the fake nbdev_test ran since the last call (and clear the log)."""
        if not self.log.exists():
            return []
        names = self.log.read_text().split()
        self.log.unlink()
        return sorted(names)


@pytest.fixture(scope='session')
def fake_runner(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp('runner') / 'fake_nbrun.py'
    p.write_text(FAKE_NBRUN, encoding='utf-8')
    return p


@pytest.fixture
def project(tmp_path, monkeypatch, fake_runner) -> FakeProject:
    root = tmp_path / 'proj'
    root.mkdir()
    fp = FakeProject(root, tmp_path / 'runs.log')
    shutil.copy(REPO / 'settings.ini', root / 'settings.ini')
    fp.write('milestones/milestones.json', json.dumps({'modules': MODULES, 'milestones': MILESTONES}, indent=1))
    fp.write('nbs/01_alpha.ipynb', notebook('#| export\nx = 1', 'assert x == 1', default_exp='alpha'))
    fp.write('nbs/02_beta.ipynb', notebook('#| export\nfrom tinytorch.alpha import x\ny = x + 1', 'assert y == 2',
                                           default_exp='beta'))
    fp.write('nbs/03_gamma.ipynb', notebook('#| export\nfrom tinytorch.beta import y', 'z = y * 10',
                                            'assert z == 21, f"expected 21, got {z}"', default_exp='gamma'))
    # the library as nbdev_export would leave it (relative imports, autogenerated header)
    fp.write('tinytorch/__init__.py', "__version__ = '0.1.0'\n")
    fp.write('tinytorch/alpha.py', '# AUTOGENERATED! DO NOT EDIT! File to edit: ../nbs/01_alpha.ipynb.\n\nx = 1\n')
    fp.write('tinytorch/beta.py', '# AUTOGENERATED! DO NOT EDIT! File to edit: ../nbs/02_beta.ipynb.\n\n'
                                  'from .alpha import x\ny = x + 1\n')
    fp.write('tinytorch/gamma.py', '# AUTOGENERATED! DO NOT EDIT! File to edit: ../nbs/03_gamma.ipynb.\n\n'
                                   'from .beta import y\n')
    fp.write('tests/capability/test_first.py', 'def test_adds():\n    assert 1 + 1 == 2\n')
    fp.write('tests/modules/test_01_alpha.py', 'from tinytorch.alpha import x\ndef test_x():\n    assert x == 1\n')
    fp.write('tests/modules/test_02_beta.py', 'from tinytorch.beta import y\ndef test_y():\n    assert y == 2\n')
    fp.write('tests/modules/test_03_gamma.py', 'import tinytorch.gamma\ndef test_gamma():\n    assert tinytorch.gamma.y == 2\n')
    monkeypatch.setenv('TITO_NBRUN', f'{sys.executable} {fake_runner}')
    monkeypatch.setenv('TITO_FAKE_LOG', str(fp.log))
    # the fake capability tests need no plugins; skipping hypothesis's saves ~1 s per pytest run
    monkeypatch.setenv('PYTEST_ADDOPTS', '-p no:hypothesispytest')
    for var in ('NO_COLOR', 'TITO_ROOT', 'TITO_TEST_TIMEOUT'):
        monkeypatch.delenv(var, raising=False)
    return fp


@pytest.fixture
def use_real_runner(monkeypatch):
    monkeypatch.delenv('TITO_NBRUN', raising=False)
