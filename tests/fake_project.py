"""The fake TinyTorch project the milestone-system tests run on (fixtures in tests/conftest.py).

Kept out of conftest.py so tests can import `notebook` by a name no other conftest shadows.
"""
import json
from pathlib import Path

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


