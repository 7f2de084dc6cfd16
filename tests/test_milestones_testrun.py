"""Tests of `python -m milestones.testrun` (what `make test` runs) on the fake project:
the clean/export sync check never touches the user's files, and the summary line is exact."""
import subprocess
import sys
from pathlib import Path

from milestones import testrun

BIN = Path(sys.executable).parent


def _snapshot(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file() and '__pycache__' not in p.parts}


def _make_consistent(root: Path):
    for tool in ('nbdev_clean', 'nbdev_export'):
        subprocess.run([str(BIN / tool)], cwd=root, check=True, capture_output=True)
    subprocess.run([sys.executable, '-m', 'milestones.tito', '--root', str(root), 'course', 'manifest'], check=True,
                   capture_output=True)


def test_sync_check_passes_then_names_unclean_and_stale_files(project):
    _make_consistent(project.root)
    ok, msgs = testrun.sync_check(project.root)
    assert ok, msgs
    nb = project.root / 'nbs/01_alpha.ipynb'
    nb.write_text(nb.read_text().replace('"execution_count": null', '"execution_count": 7', 1))
    lib = project.root / 'tinytorch/beta.py'
    lib.write_text(lib.read_text() + '# edited by hand\n')
    (project.root / 'nbs/03_gamma.ipynb').unlink()  # its tinytorch/gamma.py is now stale
    before = _snapshot(project.root)
    ok, msgs = testrun.sync_check(project.root)
    assert not ok
    text = '\n'.join(msgs)
    assert 'notebooks not clean' in text and 'nbs/01_alpha.ipynb' in text
    assert 'nbdev_export would change: tinytorch/beta.py' in text
    assert 'stale generated files: tinytorch/gamma.py' in text
    assert 'nbdev_clean && nbdev_export' in text
    assert 'milestones/manifest.json is out of date for: gamma' in text
    assert _snapshot(project.root) == before  # the check worked on a copy


def test_summary_line_counts_notebooks_and_pytest(project, capsys):
    code = testrun.main(['--root', str(project.root), '--skip-sync'])
    out = capsys.readouterr().out
    assert code == 1
    assert '✅ nbs/01_alpha.ipynb' in out and '❌ nbs/03_gamma.ipynb' in out
    assert 'expected 21, got 20' in out  # the failing notebook's output is shown
    assert out.rstrip().splitlines()[-1] == 'summary: 6 passed, 1 failed'  # 2 notebooks + 4 pytest tests


def test_all_green_exits_zero(project, capsys):
    nb = project.root / 'nbs/03_gamma.ipynb'
    nb.write_text(nb.read_text().replace('z == 21', 'z == 20'))
    code = testrun.main(['--root', str(project.root), '--skip-sync'])
    assert code == 0
    assert capsys.readouterr().out.rstrip().splitlines()[-1] == 'summary: 7 passed, 0 failed'


def test_no_tests_collected_is_a_failure(project, capsys):
    (project.root / 'tests/capability/test_first.py').unlink()
    for t in (project.root / 'tests/modules').iterdir():
        t.unlink()
    for nb in ('02_beta', '03_gamma'):
        (project.root / f'nbs/{nb}.ipynb').unlink()
    code = testrun.main(['--root', str(project.root), '--skip-sync'])
    out = capsys.readouterr().out
    assert code == 1 and 'collected no tests' in out
    assert out.rstrip().splitlines()[-1] == 'summary: 1 passed, 1 failed'


def test_manifest_check_names_the_module_whose_tests_changed(project):
    _make_consistent(project.root)
    assert testrun._manifest_check(project.root) is None
    nb = project.root / 'nbs/02_beta.ipynb'
    nb.write_text(nb.read_text().replace('assert y == 2', 'assert y == 2 or True'))
    assert testrun._manifest_check(project.root) == 'milestones/manifest.json is out of date for: beta'
    (project.root / 'milestones/manifest.json').unlink()
    assert testrun._manifest_check(project.root) == 'milestones/manifest.json is missing'


def test_pytest_summary_parsing():
    assert testrun._pytest_counts('2 failed, 10 passed, 1 skipped, 3 warnings in 4.2s') == {
        'failed': 2, 'passed': 10, 'skipped': 1, 'warnings': 3}
    assert testrun._pytest_counts('1 error in 0.3s') == {'error': 1}
