"""Tests of the `tito` CLI (milestones/tito.py) on a fake project (see tests/conftest.py).

Covers status icons/percentages, caching, corrupt state files, unknown names, unlock,
colour/NO_COLOR/pipes, atomic writes, module and milestone tests, timeline and docs output.
"""
import datetime as dt
import json
import os
import pty
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fake_project import notebook
from milestones import engine
from milestones.tito import main

REPO = Path(__file__).resolve().parent.parent


def tito(project, *argv):
    return main(['--root', str(project.root), *argv])


def run(capsys, project, *argv):
    code = tito(project, *argv)
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- status

def test_status_icons_percentages_and_statements(project, capsys):
    code, out, err = run(capsys, project, 'milestone', 'status')
    assert code == 0, err
    assert '✅ 01 Alpha' in out and '✅ 02 Beta' in out
    assert '🔄 03 Gamma' in out and '⏳ 04 Delta' in out
    first = next(l for l in out.splitlines() if 'First Steps' in l)
    second = next(l for l in out.splitlines() if 'Second Wind' in l)
    assert first.startswith('🔓') and '100%' in first and '█' * 20 in first and '2/2' in first
    assert 'ready to unlock' in first
    assert second.startswith('🔄') and ' 0%' in second and '░' * 20 in second and '0/2' in second
    assert '🔓 Can add numbers' in out and '🔓 I can add' in out and '🔄 I can do more' in out
    assert 'Current focus: First Steps (100%, ready to unlock)' in out
    assert 'Next module:   🔄 03 Gamma' in out and 'expected 21, got 20' in out
    assert 'tito milestone unlock' in out
    assert 'Traceback' not in out + err


def test_unlock_hint_only_for_the_next_milestone(project, capsys):
    nb = project.root / 'nbs/03_gamma.ipynb'
    nb.write_text(nb.read_text().replace('z == 21', 'z == 20'))
    project.write('nbs/04_delta.ipynb', notebook('assert True'))
    project.write('tests/modules/test_04_delta.py', 'def test_delta():\n    assert True\n')
    _, out, _ = run(capsys, project, 'milestone', 'status')
    assert out.count('run `tito milestone unlock`') == 1
    assert 'it can be unlocked once First Steps is' in out


def test_status_not_started_milestone(project, capsys):
    (project.root / 'nbs/03_gamma.ipynb').unlink()
    _, out, _ = run(capsys, project, 'milestone', 'status')
    second = next(l for l in out.splitlines() if 'Second Wind' in l)
    assert second.startswith('⏳')
    assert '⏳ Can do more' in out


def test_detailed_gives_reason_per_module(project, capsys):
    _, out, _ = run(capsys, project, 'milestone', 'status', '--detailed')
    lines = {l.split()[2]: l for l in out.splitlines() if l.strip().startswith(('✅ 0', '🔄 0', '⏳ 0'))}
    assert 'tests pass' in lines['Alpha']
    assert 'notebook nbs/04_delta.ipynb not present' in lines['Delta']
    # the failing test's first error line: cell, statement and exception
    assert 'cell #4' in lines['Gamma'] and 'assert z == 21' in lines['Gamma']
    assert 'AssertionError: expected 21, got 20' in lines['Gamma']


# --------------------------------------------------------------------------- cache

def test_second_status_runs_no_tests(project, capsys):
    run(capsys, project, 'milestone', 'status')
    assert project.runs() == ['01_alpha.ipynb', '02_beta.ipynb', '03_gamma.ipynb']
    _, out, _ = run(capsys, project, 'milestone', 'status')
    assert project.runs() == []
    assert 'Module tests:  0 run, 3 from cache' in out


def test_edits_retest_only_what_they_affect(project, capsys):
    run(capsys, project, 'milestone', 'status')
    project.runs()
    nb = project.root / 'nbs/01_alpha.ipynb'
    nb.write_text(nb.read_text().replace('assert x == 1', 'assert x == 1, \\"one\\"'))
    run(capsys, project, 'milestone', 'status')
    assert project.runs() == ['01_alpha.ipynb']  # nothing imports the notebook itself
    # re-exporting alpha changes what alpha's protected tests and beta import, and what gamma imports through beta.py
    lib = project.root / 'tinytorch/alpha.py'
    lib.write_text(lib.read_text() + '# re-exported\n')
    run(capsys, project, 'milestone', 'status')
    assert project.runs() == ['01_alpha.ipynb', '02_beta.ipynb', '03_gamma.ipynb']
    lib = project.root / 'tinytorch/beta.py'
    lib.write_text(lib.read_text() + '# re-exported\n')
    run(capsys, project, 'module', 'status')
    assert project.runs() == ['02_beta.ipynb', '03_gamma.ipynb']
    (project.root / 'tinytorch/delta.py').write_text('# nobody imports this\n')
    run(capsys, project, 'module', 'status')
    assert project.runs() == []


def test_fixing_a_notebook_turns_it_green(project, capsys):
    run(capsys, project, 'milestone', 'status')
    nb = project.root / 'nbs/03_gamma.ipynb'
    nb.write_text(nb.read_text().replace('z == 21', 'z == 20'))
    _, out, _ = run(capsys, project, 'milestone', 'status')
    assert '✅ 03 Gamma' in out and project.runs()[-1] == '03_gamma.ipynb'


def test_corrupt_cache_is_rebuilt_with_warning(project, capsys):
    run(capsys, project, 'milestone', 'status')
    cache = project.root / '.tito/cache/modules.json'
    cache.write_text('{"version": 2, "modules": {"alpha": ')  # truncated
    code, out, err = run(capsys, project, 'milestone', 'status')
    assert code == 0 and 'Traceback' not in err
    assert 'warning:' in err and 'modules.json' in err and 'rebuilding' in err
    assert '✅ 01 Alpha' in out
    data = json.loads(cache.read_text())
    assert set(data['modules']) == {'alpha', 'beta', 'gamma'}
    assert len(list((project.root / '.tito/cache').glob('modules.json.corrupt-*'))) == 1


@pytest.mark.parametrize('bad', ['[]', '{"version": 2, "modules": {"alpha": {"ok": true}}}', '\xff\xfe', '',
                                 '{"version": 1, "modules": {}}'])
def test_malformed_cache_shapes_are_rebuilt(project, capsys, bad):
    (project.root / '.tito/cache').mkdir(parents=True)
    (project.root / '.tito/cache/modules.json').write_bytes(bad.encode('latin-1'))
    code, out, err = run(capsys, project, 'milestone', 'status')
    assert code == 0 and 'warning:' in err and 'Traceback' not in err
    assert json.loads((project.root / '.tito/cache/modules.json').read_text())['version'] == 2


def test_corrupt_unlocks_file_is_rebuilt_with_warning(project, capsys):
    (project.root / '.tito').mkdir()
    (project.root / '.tito/unlocks.json').write_text('{"version": 1, "unlocked": {"first": {"date": "yesterday"}}}')
    code, out, err = run(capsys, project, 'milestone', 'timeline')
    assert code == 0 and 'warning:' in err and 'unlocks.json' in err and 'Traceback' not in err
    assert json.loads((project.root / '.tito/unlocks.json').read_text()) == {'unlocked': {}, 'version': 1}


# --------------------------------------------------------------------------- names

@pytest.mark.parametrize('argv', [['milestone', 'test', 'nope'], ['module', 'test', 'nope']])
def test_unknown_names_list_valid_ones_and_exit_2(project, capsys, argv):
    code, out, err = run(capsys, project, *argv)
    assert code == 2
    assert "unknown" in err and "'nope'" in err
    if argv[0] == 'milestone':
        assert 'first ("First Steps")' in err and 'second ("Second Wind")' in err
    else:
        assert 'alpha, beta, gamma, delta' in err


@pytest.mark.parametrize('name', ['first', 'FIRST', 'First Steps', 'first steps', 'First', 'first-steps'])
def test_milestone_names_by_key_full_or_short(project, name):
    ms = engine.Course(project.root).find_milestone(name)
    assert ms.key == 'first'


@pytest.mark.parametrize('name', ['beta', 'Beta', '02_beta', '02_beta.ipynb', '2', '02'])
def test_module_names(project, name):
    assert engine.Course(project.root).find_module(name).key == 'beta'


def test_real_course_names_resolve():
    course = engine.Course(REPO)
    assert course.find_milestone('Neural Architecture').key == 'architecture'
    assert course.find_milestone('architecture').key == 'architecture'
    assert course.find_milestone('inference deployment').key == 'inference'
    assert course.find_milestone('Inference').key == 'inference'
    assert [m.key for m in course.modules][:3] == ['setup', 'tensor', 'activations']
    assert len(course.modules) == 16 and len(course.milestones) == 5


# --------------------------------------------------------------------------- unlock

def test_unlock_refuses_when_capability_test_fails(project, capsys):
    project.write('tests/capability/test_first.py', 'def test_adds():\n    assert 1 + 1 == 3, "arithmetic broke"\n')
    code, out, err = run(capsys, project, 'milestone', 'unlock')
    assert code == 1
    assert 'Cannot unlock First Steps' in out and 'capability test does not' in out
    assert 'arithmetic broke' in out
    assert not (project.root / '.tito/unlocks.json').exists()


def test_unlock_refuses_with_missing_capability_file(project, capsys):
    (project.root / 'tests/capability/test_first.py').unlink()
    code, out, _ = run(capsys, project, 'milestone', 'unlock')
    assert code == 1 and 'not written yet' in out


def test_unlock_records_date_then_explains_what_is_missing(project, capsys):
    code, out, err = run(capsys, project, 'milestone', 'unlock')
    assert code == 0, out + err
    today = dt.date.today().isoformat()
    assert f'Unlocked First Steps on {today}' in out
    data = json.loads((project.root / '.tito/unlocks.json').read_text())
    assert data['unlocked']['first']['date'] == today
    dt.datetime.fromisoformat(data['unlocked']['first']['timestamp'])

    _, out, _ = run(capsys, project, 'milestone', 'status')
    first = next(l for l in out.splitlines() if 'First Steps' in l)
    assert first.startswith('✅') and f'unlocked {today}' in first
    assert '✅ Can add numbers' in out and '✅ I can add' in out and '🔄 I can do more' in out
    assert 'Current focus: Second Wind' in out

    code, out, _ = run(capsys, project, 'milestone', 'unlock')
    assert code == 1
    assert 'Cannot unlock Second Wind yet: 2 of its 2 modules do not pass' in out
    assert '🔄 03 Gamma (failing)' in out and 'expected 21, got 20' in out
    assert '⏳ 04 Delta (not started): notebook nbs/04_delta.ipynb not present' in out


def test_unlock_when_everything_is_unlocked(project, capsys):
    (project.root / '.tito').mkdir()
    (project.root / '.tito/unlocks.json').write_text(json.dumps(
        {'version': 1, 'unlocked': {'first': {'date': '2026-01-02'}, 'second': {'date': '2026-01-03'}}}))
    code, out, _ = run(capsys, project, 'milestone', 'unlock')
    assert code == 0 and 'already unlocked' in out and '2026-01-03' in out
    _, out, _ = run(capsys, project, 'milestone', 'status')
    second = next(l for l in out.splitlines() if 'Second Wind' in l)
    assert second.startswith('⚠️') and 'regressed' in second  # Second Wind was unlocked but Gamma fails now
    assert 'these modules no longer pass: 03 Gamma, 04 Delta' in out and '⚠️ Can do more' in out
    assert 'Regressed:     Second Wind' in out


# --------------------------------------------------------------------------- milestone / module test

def test_milestone_test_reports_modules_and_capability(project, capsys):
    run(capsys, project, 'milestone', 'status')  # warm the cache
    code, out, _ = run(capsys, project, 'milestone', 'test', 'First', 'Steps')  # unquoted works too
    assert code == 0
    assert '✅ 01 Alpha: tests pass (cached)' in out and '✅ 02 Beta: tests pass (cached)' in out
    assert '✅ all 1 capability tests ran and passed' in out and 'Result: ✅' in out
    code, out, _ = run(capsys, project, 'milestone', 'test', 'second', '--fresh')
    assert code == 1
    assert '🔄 03 Gamma' in out and 'ran in' in out
    assert '⏳ 04 Delta' in out
    assert '❌ capability test tests/capability/test_second.py is not written yet' in out
    assert 'Result: ❌' in out and 'capability test not written yet' in out and 'capability test failed' not in out


def test_module_test_is_uncached_and_prints_output_on_failure(project, capsys):
    run(capsys, project, 'milestone', 'status')
    project.runs()
    code, out, _ = run(capsys, project, 'module', 'test', 'gamma')
    assert code == 1 and project.runs() == ['03_gamma.ipynb']
    assert '--- test output ---' in out and 'Traceback' in out and 'expected 21, got 20' in out
    code, out, _ = run(capsys, project, 'module', 'test', '01_alpha')
    assert code == 0 and '✅ 01 Alpha' in out and project.runs() == ['01_alpha.ipynb']
    code, out, _ = run(capsys, project, 'module', 'test', 'Delta')
    assert code == 1 and 'not present' in out


def test_module_status_table(project, capsys):
    code, out, _ = run(capsys, project, 'module', 'status')
    assert code == 0
    rows = [l for l in out.splitlines() if l[:2].isdigit()]
    assert len(rows) == 4
    assert '✅' in rows[0] and '🔄' in rows[2] and '⏳' in rows[3]
    assert '2/4 modules pass' in out


# --------------------------------------------------------------------------- timeline and docs

def test_timeline_vertical_and_horizontal(project, capsys):
    _, out, _ = run(capsys, project, 'milestone', 'timeline')
    assert '├── 🔓 First Steps' in out and 'ready to unlock' in out and '└── 🔄 Second Wind' in out
    assert '│   ├── ✅ 01 Alpha' in out and '    └── ⏳ 04 Delta' in out
    _, out, _ = run(capsys, project, 'milestone', 'timeline', '--horizontal')
    assert out.strip() == '🔓 First → 🔄 Second'


def test_write_docs_writes_progress_and_svg(project, capsys):
    code, out, _ = run(capsys, project, 'milestone', 'status', '--write-docs')
    assert code == 0 and 'Wrote _docs/progress.md and _docs/timeline.svg' in out
    md = (project.root / '_docs/progress.md').read_text()
    assert '![TinyTorch milestone timeline](timeline.svg)' in md
    assert '| First Steps | 🔓 ready to unlock | 100%' in md and '🔄 Gamma' in md
    svg = (project.root / '_docs/timeline.svg').read_text()
    assert '<svg' in svg and 'First Steps' in svg and '#2e9e44' in svg and '#f0a202' in svg
    assert not [p for p in (project.root / '_docs').iterdir() if p.name.endswith('.tmp')]


def test_write_progress_api_for_the_docs_builder(project, tmp_path):
    from milestones.progress import write_progress
    md, svg = write_progress(tmp_path / 'site', root=project.root)
    assert md == tmp_path / 'site/progress.md' and svg == tmp_path / 'site/timeline.svg'
    assert md.is_file() and svg.is_file()


# --------------------------------------------------------------------------- atomic writes

def test_state_writes_are_atomic(monkeypatch, tmp_path):
    target = tmp_path / 'state.json'
    engine.atomic_write_json(target, {'version': 1, 'ok': True})
    before = target.read_text()

    def boom(src, dst):
        raise OSError('disk full')
    monkeypatch.setattr(engine.os, 'replace', boom)
    with pytest.raises(OSError):
        engine.atomic_write_json(target, {'version': 1, 'ok': False})
    assert target.read_text() == before  # old content intact
    assert [p.name for p in tmp_path.iterdir()] == ['state.json']  # temp file cleaned up


def test_cache_is_written_through_os_replace(project, monkeypatch, capsys):
    calls = []
    real = os.replace
    monkeypatch.setattr(engine.os, 'replace', lambda a, b: (calls.append((Path(a), Path(b))), real(a, b)))
    run(capsys, project, 'milestone', 'status')
    assert calls and all(a.parent == b.parent and b.name == 'modules.json' for a, b in calls)


# --------------------------------------------------------------------------- colour and pipes

def _subprocess_env(project, **extra):
    env = {k: v for k, v in os.environ.items() if k != 'NO_COLOR'}
    env.update(extra)
    return env


def _tito_cmd(project, *argv):
    return [sys.executable, '-m', 'milestones.tito', '--root', str(project.root), *argv]


def test_piped_output_is_plain_unicode(project):
    p = subprocess.run(_tito_cmd(project, 'milestone', 'status'), cwd=REPO, capture_output=True,
                       env=_subprocess_env(project))
    out = p.stdout.decode('utf-8')
    assert p.returncode == 0 and '\033[' not in out and '✅ 01 Alpha' in out and '█' in out


def _run_in_pty(cmd, env):
    try:
        master, slave = pty.openpty()
    except OSError as e:
        pytest.skip(f'no pseudo-terminal available here: {e}')
    p = subprocess.Popen(cmd, cwd=REPO, stdout=slave, stderr=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks = []
    while True:
        r, _, _ = select.select([master], [], [], 20)
        if not r:
            break
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    p.wait(timeout=20)
    os.close(master)
    return b''.join(chunks).decode('utf-8', 'replace')


def test_terminal_gets_colour_unless_no_color(project):
    out = _run_in_pty(_tito_cmd(project, 'milestone', 'status'), _subprocess_env(project))
    assert '\033[' in out and '✅' in out
    out = _run_in_pty(_tito_cmd(project, 'milestone', 'status'), _subprocess_env(project, NO_COLOR='1'))
    assert '\033[' not in out and '✅' in out


# --------------------------------------------------------------------------- system / docs / usage

def test_system_doctor_without_setup_module(project):
    p = subprocess.run(_tito_cmd(project, 'system', 'doctor'), cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 1 and "Setup module is not exported yet" in p.stdout


def test_system_doctor_calls_print_system_report(project):
    project.write('tinytorch/setup.py', 'def system_report():\n    return {"cores": 2}\n'
                                        'def print_system_report():\n    print("REPORT cores=2")\n')
    p = subprocess.run(_tito_cmd(project, 'system', 'doctor'), cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0 and 'REPORT cores=2' in p.stdout


def test_docs_build_without_site_module(project, capsys, monkeypatch):
    import milestones
    monkeypatch.setitem(sys.modules, 'milestones.site', None)  # as if the file did not exist
    monkeypatch.delattr(milestones, 'site', raising=False)
    code, out, err = run(capsys, project, 'docs', 'build')
    assert code == 1 and 'milestones/site.py is not there yet' in err


def test_docs_build_calls_build_site(project, capsys, monkeypatch):
    import types
    import milestones
    site = types.ModuleType('milestones.site')
    seen = {}
    site.build_site = lambda root=None: seen.setdefault('root', root) and Path(root) / '_site'
    monkeypatch.setitem(sys.modules, 'milestones.site', site)
    monkeypatch.setattr(milestones, 'site', site, raising=False)
    code, out, _ = run(capsys, project, 'docs', 'build')
    assert code == 0 and seen['root'] == project.root


def test_group_without_command_shows_help(project, capsys):
    code, out, err = run(capsys, project, 'milestone')
    assert code == 2 and 'status' in err and 'unlock' in err


def test_timeline_svg_is_redrawn_only_when_states_change(project, capsys, monkeypatch):
    from milestones import progress
    run(capsys, project, 'milestone', 'status', '--write-docs')
    monkeypatch.setattr(progress, 'draw_timeline_svg', lambda *a: pytest.fail('redrew an unchanged timeline'))
    assert tito(project, 'milestone', 'status', '--write-docs') == 0
    nb = project.root / 'nbs/03_gamma.ipynb'
    nb.write_text(nb.read_text().replace('z == 21', 'z == 20'))
    monkeypatch.setattr(progress, 'draw_timeline_svg', lambda *a: b'<?xml?>\n<svg>redrawn</svg>')
    run(capsys, project, 'milestone', 'status', '--write-docs')
    assert 'redrawn' in (project.root / '_docs/timeline.svg').read_text()


# --------------------------------------------------------------------------- issue 7, section 3: holes that used to fool the status

def test_unlock_refuses_when_a_capability_test_skips(project, capsys):
    project.write('tests/capability/test_first.py',
                  'import pytest\ndef test_adds():\n    assert 1 + 1 == 2\n'
                  'def test_needs_data():\n    pytest.skip("the Foo dataset is missing: apt-get install foo-data")\n')
    code, out, err = run(capsys, project, 'milestone', 'unlock')
    assert code == 1 and 'Cannot unlock First Steps' in out
    assert 'skipped' in out and 'test_needs_data' in out and 'apt-get install foo-data' in out
    assert not (project.root / '.tito/unlocks.json').exists()


def test_unlock_retests_instead_of_trusting_the_cache(project, capsys):
    run(capsys, project, 'milestone', 'status')
    cache_path = project.root / '.tito/cache/modules.json'
    cache = json.loads(cache_path.read_text())
    cache['modules']['gamma'].update(ok=True, reason='tests pass', inputs={})   # a forged "pass"
    cache_path.write_text(json.dumps(cache))
    (project.root / '.tito/unlocks.json').write_text(json.dumps({'version': 1, 'unlocked': {'first': {'date': '2026-01-02'}}}))
    project.write('nbs/04_delta.ipynb', notebook('assert True'))
    project.write('tests/modules/test_04_delta.py', 'def test_ok():\n    assert True\n')
    project.write('tests/capability/test_second.py', 'def test_ok():\n    assert True\n')
    _, out, _ = run(capsys, project, 'milestone', 'status')
    assert '✅ 03 Gamma' in out          # status trusts a cache entry whose inputs are current...
    project.runs()
    code, out, _ = run(capsys, project, 'milestone', 'unlock')
    assert code == 1 and '03 Gamma (failing)' in out   # ...unlock tests afresh
    assert '03_gamma.ipynb' in project.runs()


def test_regressed_shows_everywhere(project, capsys):
    assert tito(project, 'milestone', 'unlock') == 0
    capsys.readouterr()
    lib = project.root / 'tinytorch/alpha.py'
    lib.write_text(lib.read_text().replace('x = 1', 'x = 3'))     # alpha's protected tests now fail
    _, out, _ = run(capsys, project, 'milestone', 'status', '--write-docs')
    first = next(l for l in out.splitlines() if 'First Steps' in l)
    assert first.startswith('⚠️') and 'regressed' in first and '✅' not in first
    assert '⚠️ Can add numbers' in out and '⚠️ I can add' in out and '✅ I can add' not in out
    _, out, _ = run(capsys, project, 'milestone', 'timeline', '--horizontal')
    assert out.strip().startswith('⚠️ First')
    _, out, _ = run(capsys, project, 'milestone', 'timeline')
    assert '⚠️ First Steps' in out and 'regressed' in out
    svg = (project.root / '_docs/timeline.svg').read_text()
    assert 'regressed' in svg
    md = (project.root / '_docs/progress.md').read_text()
    assert '| First Steps | ⚠️ regressed' in md


def test_make_clean_keeps_the_learners_history(tmp_path):
    work = tmp_path / 'proj'
    (work / '.tito/cache').mkdir(parents=True)
    (work / '.tito/saved').mkdir()
    for rel in ('.tito/unlocks.json', '.tito/unlocks.json.corrupt-20260101T000000', '.tito/saved/02_tensor-1.ipynb',
                '.tito/cache/modules.json', '.tito/system_report.json', '_docs/index.html'):
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text('x')
    p = subprocess.run(['make', '-f', str(REPO / 'Makefile'), 'clean'], cwd=work, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    left = sorted(str(p.relative_to(work)) for p in work.rglob('*') if p.is_file())
    assert left == ['.tito/saved/02_tensor-1.ipynb', '.tito/unlocks.json', '.tito/unlocks.json.corrupt-20260101T000000']


def test_system_doctor_with_an_unwritable_state_folder(tmp_path):
    proj = tmp_path / 'proj'
    shutil.copytree(REPO / 'milestones', proj / 'milestones', ignore=shutil.ignore_patterns('__pycache__'))
    shutil.copy(REPO / 'settings.ini', proj / 'settings.ini')
    (proj / 'tinytorch').mkdir()
    shutil.copy(REPO / 'tinytorch/setup.py', proj / 'tinytorch/setup.py')
    (proj / 'tinytorch/__init__.py').write_text('')
    (proj / '.tito').write_text('a file where the folder should be')   # unwritable for root too
    p = subprocess.run([sys.executable, '-m', 'milestones.tito', '--root', str(proj), 'system', 'doctor'],
                       cwd=proj, capture_output=True, text=True, timeout=120)
    assert 'Traceback' not in p.stdout + p.stderr
    assert 'Matmul' in p.stdout and 'Report not saved' in p.stdout


def test_every_corrupt_state_file_keeps_its_own_backup(project, capsys):
    cache = project.root / '.tito/cache/modules.json'
    cache.parent.mkdir(parents=True)
    for junk in ('{first', '{second'):
        cache.write_text(junk)
        run(capsys, project, 'module', 'status')
    backups = sorted((project.root / '.tito/cache').glob('modules.json.corrupt-*'))
    assert [b.read_text() for b in backups] == ['{first', '{second']


def test_one_bad_unlock_record_does_not_discard_the_others(project, capsys):
    (project.root / '.tito').mkdir()
    unlocks = project.root / '.tito/unlocks.json'
    unlocks.write_text(json.dumps({'version': 1, 'unlocked': {'first': {'date': '2026-01-02'},
                                                              'second': {'date': 'last tuesday'}}}))
    code, out, err = run(capsys, project, 'milestone', 'timeline')
    assert code == 0 and "['second']" in err and 'kept the others' in err
    assert json.loads(unlocks.read_text())['unlocked'] == {'first': {'date': '2026-01-02'}}
    assert 'unlocked 2026-01-02' in out
    assert len(list((project.root / '.tito').glob('unlocks.json.corrupt-*'))) == 1


def test_unlock_shows_the_capability_tests_progress(project, capsys):
    project.write('tests/capability/test_first.py', 'def test_trains():\n    print("epoch 1/3 loss 0.52")\n')
    code, out, err = run(capsys, project, 'milestone', 'unlock')
    assert code == 0
    assert 'running its capability test' in err and 'test_trains' in out and 'epoch 1/3 loss 0.52' in out


def test_edited_tests_do_not_count(project, capsys):
    assert tito(project, 'course', 'manifest') == 0
    _, out, _ = run(capsys, project, 'module', 'status')
    rows = [l for l in out.splitlines() if l[:2].isdigit()]
    assert '✅' in rows[0] and '🔄' in rows[2]
    nb = project.root / 'nbs/03_gamma.ipynb'
    nb.write_text(nb.read_text().replace('assert z == 21, f\\"expected 21, got {z}\\"', 'pass'))
    _, out, _ = run(capsys, project, 'milestone', 'status', '--detailed')
    gamma = next(l for l in out.splitlines() if '03 Gamma' in l)
    assert gamma.strip().startswith('✏️') and 'differs from the released notebook' in gamma
    project.write('tests/modules/test_01_alpha.py', 'def test_x():\n    pass\n')
    _, out, _ = run(capsys, project, 'milestone', 'status', '--detailed')
    alpha = next(l for l in out.splitlines() if '01 Alpha' in l)
    assert alpha.strip().startswith('✏️') and 'tests/modules/test_01_alpha.py differs' in alpha
