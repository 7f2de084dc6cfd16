"""Tests of the progress engine (milestones/engine.py) and its notebook runner (milestones/nbrun.py):
what a run really used keys the cache, what did not run is not a pass, timeouts and concurrent
runs, and the error-line parser on real runner output. Each hole of issue 7 section 3 that lives in
the engine has a regression test here (the CLI-facing ones are in tests/test_cli.py)."""
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from milestones import engine
from fake_project import notebook

REPO = Path(__file__).resolve().parent.parent


def states(project, **kw):
    return {k: v.state for k, v in engine.Engine(project.root).module_states(**kw).items()}


# --------------------------------------------------------------------------- what ran

def test_real_runner_pass_fail_and_reason(project, use_real_runner):
    project.write('nbs/01_alpha.ipynb', notebook('#| export\nx = 1', 'assert x == 1', default_exp='alpha'))
    project.write('nbs/02_beta.ipynb', notebook('from fastcore.test import test_eq', 'test_eq(1 + 1, 3)'))
    (project.root / 'nbs/03_gamma.ipynb').unlink()
    eng = engine.Engine(project.root)
    st = eng.module_states()
    assert st['alpha'].state == 'pass' and st['alpha'].reason == 'tests pass'
    assert st['beta'].state == 'fail'
    assert st['beta'].reason.startswith('cell #2 `test_eq(1 + 1, 3)`: AssertionError: ==')
    assert st['gamma'].state == 'absent' and st['delta'].state == 'absent'
    assert sorted(eng.runs) == ['alpha', 'beta']
    cache = json.loads((project.root / '.tito/cache/modules.json').read_text())
    assert cache['modules']['beta']['ok'] is False and 'Traceback' in cache['modules']['beta']['output']
    again = engine.Engine(project.root)
    assert again.module_states()['beta'].cached and again.runs == []


def test_notest_file_and_skip_exec_do_not_hide_a_failing_notebook(project, use_real_runner):
    """nbdev_test exits 0 with an nbs/.notest file or `skip_exec: true`; the runner still runs every cell."""
    (project.root / 'nbs/.notest').write_text('')
    nb = json.loads(notebook('assert 1 == 2, "ran anyway"'))
    nb['cells'].insert(0, {'cell_type': 'raw', 'metadata': {}, 'source': ['---\n', 'skip_exec: true\n', '---']})
    project.write('nbs/01_alpha.ipynb', json.dumps(nb))
    p = subprocess.run([str(Path(sys.executable).parent / 'nbdev_test'), '--path', 'nbs/01_alpha.ipynb'],
                       cwd=project.root, capture_output=True, text=True)
    assert p.returncode == 0   # the hole: nbdev_test says all is well
    st = engine.Engine(project.root).module_states(['alpha'])['alpha']
    assert st.state == 'fail' and 'ran anyway' in st.reason


def test_a_notebook_whose_tests_did_not_run_is_not_a_pass(project, use_real_runner):
    """Every test cell skipped by tst_flags: nothing was checked, so it is not a pass."""
    project.write('nbs/01_alpha.ipynb', notebook('#| export\nx = 1', '#| notest\nassert x == 2'))
    st = engine.Engine(project.root).module_states(['alpha'])['alpha']
    assert st.state == 'fail' and 'no test cell ran' in st.reason


def test_a_notebook_that_vanishes_is_not_a_pass_and_not_cached(project, use_real_runner, monkeypatch):
    """The notebook moved away between the engine's look and the run: the runner reports the error."""
    real = engine.test_module_now

    def move_then_run(course, module, parallel=False):
        nb = course.notebook_path(module)
        if module.key == 'alpha':
            nb.rename(nb.with_suffix('.moved'))
        return real(course, module, parallel)
    monkeypatch.setattr(engine, 'test_module_now', move_then_run)
    st = engine.Engine(project.root).module_states(['alpha'])['alpha']
    assert st.state == 'fail'
    cache = project.root / '.tito/cache/modules.json'
    assert not cache.exists() or 'alpha' not in json.loads(cache.read_text())['modules']


def test_tst_flags_use_nbdevs_space_separated_form(project, use_real_runner):
    assert 'tst_flags = notest slow' in (REPO / 'settings.ini').read_text()
    project.write('nbs/01_alpha.ipynb', notebook('#| export\nx = 1', 'assert x == 1', '#| slow\nassert False, "slow ran"',
                                                 '#| notest\nassert False, "notest ran"', default_exp='alpha'))
    assert states(project, keys=['alpha'])['alpha'] == 'pass'


def test_protected_tests_must_pass_and_must_exist(project):
    project.write('tests/modules/test_01_alpha.py', 'def test_x():\n    assert 0, "protected says no"\n')
    st = engine.Engine(project.root).module_states(['alpha'])['alpha']
    assert st.state == 'fail' and 'protected tests: 1 of 1 failed' in st.reason and 'protected says no' in st.reason
    (project.root / 'tests/modules/test_01_alpha.py').unlink()
    st = engine.Engine(project.root).module_states(['alpha'])['alpha']
    assert st.state == 'fail' and 'tests/modules/test_01_alpha.py are missing' in st.reason
    project.write('tests/modules/test_01_alpha.py', 'import pytest\ndef test_x():\n    pytest.skip("no data")\n')
    st = engine.Engine(project.root).module_states(['alpha'])['alpha']
    assert st.state == 'fail' and 'skipped' in st.reason


# --------------------------------------------------------------------------- the cache key

def test_settings_and_tool_versions_are_part_of_the_key(project, monkeypatch):
    states(project)
    project.runs()
    ini = project.root / 'settings.ini'
    ini.write_text(ini.read_text().replace('tst_flags = notest slow', 'tst_flags = notest'))
    states(project)
    assert project.runs() == ['01_alpha.ipynb', '02_beta.ipynb', '03_gamma.ipynb']
    monkeypatch.setattr(engine, 'toolchain_versions', lambda: '3.11.0 numpy==0.0.1')
    states(project)
    assert project.runs() == ['01_alpha.ipynb', '02_beta.ipynb', '03_gamma.ipynb']
    states(project)
    assert project.runs() == []


@pytest.mark.parametrize('imports', ['import numpy, tinytorch.alpha\nx = tinytorch.alpha.x',
                                     'from tinytorch.alpha import *',
                                     'import importlib\nx = importlib.import_module("tinytorch." + "alpha").x'])
def test_import_forms_a_regex_misses_still_key_the_cache(project, imports):
    project.write('nbs/04_delta.ipynb', notebook(imports, 'assert x == 1'))
    project.write('tests/modules/test_04_delta.py', 'def test_ok():\n    assert True\n')
    assert states(project, keys=['delta'])['delta'] == 'pass'
    project.runs()
    lib = project.root / 'tinytorch/alpha.py'
    lib.write_text(lib.read_text().replace('x = 1', 'x = 2'))
    assert states(project, keys=['delta'])['delta'] == 'fail'
    assert project.runs() == ['04_delta.ipynb']


def test_data_files_a_notebook_reads_are_part_of_the_key(project, use_real_runner):
    data = project.write('data/answer.txt', '1')
    project.write('.tito/system_report.json', '{"gflops": 10}')
    os.utime(data, (time.time() - 60, time.time() - 60))   # older than the run: an input, not an output
    os.utime(project.root / '.tito/system_report.json', (time.time() - 60, time.time() - 60))
    project.write('nbs/01_alpha.ipynb', notebook(
        '#| export\nx = 1', 'import json\nrep = json.load(open("../.tito/system_report.json"))',
        'assert int(open("../data/answer.txt").read()) == x', default_exp='alpha'))
    eng = engine.Engine(project.root)
    assert eng.module_states(['alpha'])['alpha'].state == 'pass'
    entry = json.loads((project.root / '.tito/cache/modules.json').read_text())['modules']['alpha']
    assert str(data.resolve()) in entry['inputs'] and any(p.endswith('system_report.json') for p in entry['inputs'])
    data.write_text('2')
    assert states(project, keys=['alpha'])['alpha'] == 'fail'


def test_timeouts_are_failures_and_never_cached(project, monkeypatch):
    project.write('nbs/01_alpha.ipynb', notebook('import time\ntime.sleep(30)'))
    monkeypatch.setenv('TITO_TEST_TIMEOUT', '1')
    st = engine.Engine(project.root).module_states(['alpha'])['alpha']
    assert st.state == 'fail' and 'did not finish within 1 s' in st.reason
    cache = project.root / '.tito/cache/modules.json'
    assert not cache.exists() or 'alpha' not in json.loads(cache.read_text())['modules']
    project.runs()
    engine.Engine(project.root).module_states(['alpha'])
    assert project.runs() == ['01_alpha.ipynb']   # tested again, not served from a cache


def test_a_timeout_kills_the_whole_process_group(project, monkeypatch, tmp_path):
    pidfile = tmp_path / 'child.pid'
    project.write('nbs/01_alpha.ipynb', notebook(
        f'import subprocess, time\np = subprocess.Popen(["sleep", "60"])\nopen({str(pidfile)!r}, "w").write(str(p.pid))\n'
        'time.sleep(60)'))
    monkeypatch.setenv('TITO_TEST_TIMEOUT', '2')
    engine.Engine(project.root).module_states(['alpha'])
    pid = int(pidfile.read_text())
    time.sleep(0.5)
    try:
        os.kill(pid, 0)
        alive = open(f'/proc/{pid}/stat').read().split()[2] != 'Z'
    except (ProcessLookupError, FileNotFoundError):
        alive = False
    assert not alive, 'the notebook\'s child process outlived the timeout'


def test_an_edit_saved_during_the_run_is_not_cached_under_the_old_key(project):
    nb = project.root / 'nbs/01_alpha.ipynb'
    project.write('nbs/01_alpha.ipynb', notebook(
        '#| export\nx = 1', f'import pathlib\np = pathlib.Path({str(nb)!r})\np.write_text(p.read_text() + " ")',
        'assert x == 1', default_exp='alpha'))
    assert states(project, keys=['alpha'])['alpha'] == 'pass'
    cache = project.root / '.tito/cache/modules.json'
    assert not cache.exists() or 'alpha' not in json.loads(cache.read_text())['modules']


def test_two_titos_at_once_test_each_module_once(project):
    project.write('nbs/01_alpha.ipynb', notebook('#| export\nx = 1', 'import time\ntime.sleep(1.5)', 'assert x == 1',
                                                 default_exp='alpha'))
    cmd = [sys.executable, '-m', 'milestones.tito', '--root', str(project.root), 'module', 'status']
    env = dict(os.environ)
    procs = [subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert project.runs() == ['01_alpha.ipynb', '02_beta.ipynb', '03_gamma.ipynb']
    assert any(b'another tito is testing' in err for _, err in outs)


def test_concurrent_engines_keep_each_others_results(project):
    a, b = engine.Engine(project.root), engine.Engine(project.root)
    a.module_states(['alpha'])
    b.module_states(['beta'])
    a.module_states(['gamma'])
    cache = json.loads((project.root / '.tito/cache/modules.json').read_text())
    assert set(cache['modules']) == {'alpha', 'beta', 'gamma'}


# --------------------------------------------------------------------------- states that need no run

def test_locked_when_an_earlier_module_it_imports_fails(project):
    lib = project.root / 'tinytorch/alpha.py'
    lib.write_text(lib.read_text().replace('x = 1', 'x = 5'))   # alpha's package no longer matches its notebook
    st = engine.Engine(project.root).module_states()
    assert st['alpha'].state == 'fail'
    assert st['beta'].state == 'locked' and st['beta'].waiting_on == 'alpha'
    assert 'waiting on 01 Alpha' in st['beta'].reason


def test_a_stub_named_in_the_error_locks_on_its_module(project):
    project.write('tinytorch/alpha.py', 'def f():\n    raise NotImplementedError("01 Alpha: f is yours to write")\nx = 1\n')
    project.write('nbs/01_alpha.ipynb', notebook('#| export\ndef f():\n    ### BEGIN YOUR CODE\n'
                                                 '    raise NotImplementedError("01 Alpha: f is yours to write")\n'
                                                 '    ### END YOUR CODE\nx = 1', 'f()', default_exp='alpha'))
    project.write('nbs/02_beta.ipynb', notebook('from tinytorch.alpha import f', 'f()'))
    st = engine.Engine(project.root).module_states()
    assert st['alpha'].state == 'todo' and st['beta'].state == 'locked' and 'waiting on 01 Alpha' in st['beta'].reason


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
    assert engine.first_error_line('') == 'the test run failed without output'
    assert len(engine.first_error_line('ValueError: ' + 'x' * 1000)) <= 200


def test_malformed_course_definition_is_a_clear_error(project):
    project.write('milestones/milestones.json', json.dumps({'modules': [{'key': 'a'}], 'milestones': []}))
    try:
        engine.Course(project.root)
    except engine.TitoError as e:
        assert 'malformed' in str(e) and "'name'" in str(e)
    else:
        raise AssertionError('expected TitoError')
