"""Tests of the progress engine (milestones/engine.py): import graph, hashing, error-line
extraction, and one run under the real nbdev_test so the reason parser sees real output."""
import json

from milestones import engine
from conftest import notebook


def test_dependencies_follow_relative_imports_transitively(project):
    c = engine.Course(project.root)
    nb = (project.root / 'nbs/03_gamma.ipynb').read_text()
    deps = engine.library_dependencies(nb, c.lib_path, c.lib_name)
    assert [p.name for p in deps] == ['alpha.py', 'beta.py']


def test_import_forms_are_recognised():
    src = ('from tinytorch.tensor import Tensor\nimport tinytorch.layers as L\n'
           'from tinytorch import (dense,\n spatial as sp)\n  from tinytorch.autograd.core import f\n'
           'from tinytorchx import nope\nimport numpy as np\n')
    assert engine._imported_names(src, 'tinytorch', relative=False) == {
        'tensor', 'layers', 'dense', 'spatial', 'autograd'}
    assert engine._imported_names('from .tensor import Tensor\nfrom . import activations\n', 'tinytorch',
                                  relative=True) == {'tensor', 'activations'}


def test_hash_changes_with_notebook_and_imported_files_only(project):
    c = engine.Course(project.root)
    nb = project.root / 'nbs/02_beta.ipynb'
    h0 = engine.module_hash(nb, c.lib_path, c.lib_name)
    (project.root / 'tinytorch/gamma.py').write_text('# changed\n')  # beta does not import gamma
    assert engine.module_hash(nb, c.lib_path, c.lib_name) == h0
    (project.root / 'tinytorch/alpha.py').write_text('x = 2\n')
    h1 = engine.module_hash(nb, c.lib_path, c.lib_name)
    assert h1 != h0
    nb.write_text(nb.read_text() + ' ')
    assert engine.module_hash(nb, c.lib_path, c.lib_name) != h1


def test_missing_imported_file_counts_and_creating_it_invalidates(project):
    c = engine.Course(project.root)
    nb = project.write('nbs/04_delta.ipynb', notebook('from tinytorch.delta import thing'))
    h0 = engine.module_hash(nb, c.lib_path, c.lib_name)
    project.write('tinytorch/delta.py', 'thing = 1\n')
    assert engine.module_hash(nb, c.lib_path, c.lib_name) != h0


NBDEV_OUTPUT = '''AssertionError in /work/main/nbs/02_tensor.ipynb:
===========================================================================

While Executing Cell #12:
Traceback (most recent call last):
  File "/work/main/.venv/lib/python3.11/site-packages/nbdev/test.py", line 52, in test_nb
    k.run_all(nb, exc_stop=True, preproc=_no_eval)
  File "<ipython-input-1-5f9a6d97538b>", line 1, in <module>
    test_eq(Tensor([1, 2]) + 1, [2, 4])
  File "/work/main/.venv/lib/python3.11/site-packages/fastcore/test.py", line 42, in test
    assert cmp(a,b),f"{cname}:\\n{a}\\n{b}"
AssertionError: ==:
[2. 3.]
[2, 4]



nbdev Tests Failed On The Following Notebooks:
==================================================
\t02_tensor.ipynb
'''


def test_first_error_line_from_nbdev_output():
    line = engine.first_error_line(NBDEV_OUTPUT)
    assert line == 'cell #12 `test_eq(Tensor([1, 2]) + 1, [2, 4])`: AssertionError: ==: [2. 3.] [2, 4]'


def test_first_error_line_without_a_cell_traceback():
    out = 'Traceback (most recent call last):\n  File "x.py", line 1\njson.decoder.JSONDecodeError: Expecting value\n'
    assert engine.first_error_line(out) == 'json.decoder.JSONDecodeError: Expecting value'
    assert engine.first_error_line('') == 'nbdev_test failed without output'
    assert len(engine.first_error_line('ValueError: ' + 'x' * 1000)) <= 200


def test_real_nbdev_test_pass_and_fail(project, use_real_nbdev_test):
    """One run through the real nbdev_test: states and the failing test's first error line."""
    project.write('nbs/01_alpha.ipynb', notebook('x = 1', 'assert x == 1'))
    project.write('nbs/02_beta.ipynb', notebook('from fastcore.test import test_eq', 'test_eq(1 + 1, 3)'))
    (project.root / 'nbs/03_gamma.ipynb').unlink()
    eng = engine.Engine(project.root)
    states = eng.module_states()
    assert states['alpha'].state == 'pass' and states['alpha'].reason == 'tests pass'
    assert states['beta'].state == 'fail'
    assert states['beta'].reason.startswith('cell #2 `test_eq(1 + 1, 3)`: AssertionError: ==: 2 3')
    assert states['gamma'].state == 'absent' and states['delta'].state == 'absent'
    assert sorted(eng.runs) == ['alpha', 'beta']
    cache = json.loads((project.root / '.tito/module_cache.json').read_text())
    assert cache['modules']['beta']['state'] == 'fail' and 'Traceback' in cache['modules']['beta']['output']
    again = engine.Engine(project.root)
    assert again.module_states()['beta'].cached and again.runs == []


def test_timeout_is_a_failure_with_a_reason(project, monkeypatch):
    project.write('nbs/01_alpha.ipynb', notebook('import time\ntime.sleep(30)'))
    monkeypatch.setenv('TITO_TEST_TIMEOUT', '1')
    st = engine.Engine(project.root).module_states(['alpha'])['alpha']
    assert st.state == 'fail' and 'did not finish within 1 s' in st.reason


def test_malformed_course_definition_is_a_clear_error(project):
    project.write('milestones/milestones.json', json.dumps({'modules': [{'key': 'a'}], 'milestones': []}))
    try:
        engine.Course(project.root)
    except engine.TitoError as e:
        assert 'malformed' in str(e) and "'name'" in str(e)
    else:
        raise AssertionError('expected TitoError')


def test_concurrent_tito_runs_keep_each_others_results(project):
    a, b = engine.Engine(project.root), engine.Engine(project.root)
    a.module_states(['alpha'])          # a loads the cache (empty) and tests alpha
    b.module_states(['beta'])           # b, loaded earlier or not, saves beta
    a.module_states(['gamma'])          # a saves again: must not drop b's beta
    cache = json.loads((project.root / '.tito/module_cache.json').read_text())
    assert set(cache['modules']) == {'alpha', 'beta', 'gamma'}
