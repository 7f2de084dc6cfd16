"""The learner's journey (issue 7): `tito course release` on this very repository, then the release
used the way a learner would, with this project's virtualenv.

One release is made per test session (module-scoped fixture) in a temp folder. The checks:
- no solution line of the reference appears in any file or git object of the release (scanned here
  with a scanner of this file's own: `git cat-file --batch-all-objects --batch` plus every file);
- it is a fresh git repository with exactly one commit;
- `tito milestone status` there shows 0/5 milestones with every module ⏳;
- copying the reference notebooks back one module at a time (then `nbdev_export`) turns exactly
  that module ✅ while the later ones stay ⏳;
- milestones unlock only in course order; `tito module reset` restores the stubs and keeps the
  learner's notebook; an edited test cell shows "tests edited".
"""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from milestones.engine import Course

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
COURSE = Course(REPO)
PRESENT = [m for m in COURSE.modules if COURSE.notebook_path(m).is_file()]


def tito(root: Path, *argv, check=False, timeout=1800):
    p = subprocess.run([sys.executable, '-m', 'milestones.tito', '--root', str(root), *argv], cwd=root,
                       capture_output=True, text=True, timeout=timeout, env={**__import__('os').environ, 'NO_COLOR': '1'})
    if check:
        assert p.returncode == 0, p.stdout + p.stderr
    return p


def export(root: Path):
    p = subprocess.run([str(BIN / 'nbdev_export')], cwd=root, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def module_rows(root: Path) -> dict:
    """{module key: icon} from `tito module status`."""
    out = tito(root, 'module', 'status', check=True).stdout
    rows = {}
    for line in out.splitlines():
        if line[:2].isdigit():
            number = int(line[:2])
            icon = line.split()[-1] if False else next(tok for tok in line.split() if tok in
                                                        ('✅', '🔄', '🔒', '⏳', '✏️', '❔'))
            rows[COURSE.modules[number - 1].key] = icon
    return rows


def reference_solution_lines() -> set:
    """Lines between the markers in the reference notebooks, minus lines that also stand outside them."""
    inside, outside = set(), set()
    for m in PRESENT:
        nb = json.loads(COURSE.notebook_path(m).read_text())
        for cell in nb['cells']:
            if cell['cell_type'] != 'code':
                continue
            in_region = False
            for line in ''.join(cell['source']).splitlines():
                s = line.strip()
                if s == '### BEGIN SOLUTION':
                    in_region = True
                elif s == '### END SOLUTION':
                    in_region = False
                elif in_region:
                    if len(s) >= 12 and not s.startswith('#'):
                        inside.add(s)
                else:
                    outside.add(s)
    return inside - outside


@pytest.fixture(scope='module')
def release(tmp_path_factory):
    dest = tmp_path_factory.mktemp('learner') / 'tinytorch-course'
    p = tito(REPO, 'course', 'release', str(dest))
    assert p.returncode == 0, p.stdout + p.stderr
    assert 'Wrote a learner repository' in p.stdout
    return dest


def _lines_of(data: bytes) -> set:
    text = data.decode('utf-8', 'replace')
    if text.lstrip().startswith('{'):
        try:
            text = '\n'.join(''.join(c.get('source', '')) for c in json.loads(text).get('cells', []))
        except (ValueError, AttributeError):
            pass
    return {l.strip() for l in text.splitlines()}


def test_no_solution_line_anywhere_in_the_release(release):
    lines = reference_solution_lines()
    assert len(lines) > 100, 'the reference should have a substantial set of solution lines'
    # every object in the repository, blobs among them, separated by their "<sha> <type> <size>" headers
    raw = subprocess.run(['git', 'cat-file', '--batch-all-objects', '--batch'], cwd=release, capture_output=True).stdout
    objects, pos = [], 0
    while pos < len(raw):
        header_end = raw.index(b'\n', pos)
        sha, kind, size = raw[pos:header_end].decode().split()
        objects.append((f'git {kind} {sha[:10]}', raw[header_end + 1:header_end + 1 + int(size)]))
        pos = header_end + 1 + int(size) + 1
    assert any(name.startswith('git commit') for name, _ in objects)
    files = [(str(p.relative_to(release)), p.read_bytes()) for p in release.rglob('*')
             if p.is_file() and '.git' not in p.relative_to(release).parts]
    leaks = [(where, sorted(_lines_of(data) & lines)[:3]) for where, data in objects + files if _lines_of(data) & lines]
    assert not leaks, leaks[:10]
    modules = {f'nbs/{m.notebook}' for m in PRESENT}
    code = ''.join(data.decode('utf-8', 'replace') for name, data in files
                   if name in modules or (name.startswith('tinytorch/') and name.endswith('.py')))
    assert '### BEGIN SOLUTION' not in code and code.count('### BEGIN YOUR CODE') >= 50


def test_release_is_a_fresh_repository_with_one_commit(release):
    count = subprocess.run(['git', 'rev-list', '--count', '--all'], cwd=release, capture_output=True, text=True)
    assert count.stdout.strip() == '1'
    assert subprocess.run(['git', 'status', '--porcelain'], cwd=release, capture_output=True, text=True).stdout == ''
    for rel in ('Makefile', 'README.md', 'settings.ini', 'milestones/tito.py', 'milestones/manifest.json',
                'tests/capability', 'tests/modules', '.ci/run', 'tinytorch/_modidx.py'):
        assert (release / rel).exists(), rel


def test_stubs_keep_signature_docstring_and_point_home(release):
    src = (release / 'tinytorch/tensor.py').read_text()
    assert 'def broadcast_shape(a: tuple, b: tuple, op: str = "op") -> tuple:' in src
    assert '"The shape NumPy broadcasting gives `a` and `b`, or an error naming both."' in src
    assert "raise NotImplementedError('02 Tensors: broadcast_shape" in src
    code = ('import sys; sys.path.insert(0, ".")\n'
            'from tinytorch.tensor import broadcast_shape\n'
            'try:\n    broadcast_shape((2,), (3,))\nexcept NotImplementedError as e:\n    print(e)\n')
    out = subprocess.run([sys.executable, '-c', code], cwd=release, capture_output=True, text=True).stdout
    assert out.startswith('02 Tensors: broadcast_shape') and 'nbs/02_tensor.ipynb' in out


def test_a_fresh_release_shows_zero_of_five(release):
    out = tito(release, 'milestone', 'status', check=True).stdout
    assert '0/16 modules pass, 0/5 milestones unlocked' in out
    assert set(module_rows(release).values()) == {'⏳'}
    assert 'Next module:   ⏳ 01 Setup (start nbs/01_setup.ipynb)' in out


def test_restoring_solutions_module_by_module_turns_each_green_in_order(release):
    done = []
    for m in PRESENT:
        shutil.copy(COURSE.notebook_path(m), release / 'nbs' / m.notebook)
        export(release)
        done.append(m.key)
        rows = module_rows(release)
        assert all(rows[k] == '✅' for k in done), (m.key, rows)
        assert all(rows[k.key] == '⏳' for k in COURSE.modules if k.key not in done), (m.key, rows)
        if m.key == 'activations':   # Foundation complete: it unlocks, and only it
            p = tito(release, 'milestone', 'unlock')
            assert p.returncode == 0 and 'Unlocked Foundation' in p.stdout, p.stdout + p.stderr
            p = tito(release, 'milestone', 'unlock')
            assert p.returncode == 1 and 'Cannot unlock Neural Architecture' in p.stdout
        if m.key == 'attention':
            out = tito(release, 'milestone', 'status', check=True).stdout
            assert re.search(r'🔓 Neural Architecture .*ready to unlock', out)
            p = tito(release, 'milestone', 'unlock')
            assert p.returncode == 0 and 'Unlocked Neural Architecture' in p.stdout, p.stdout + p.stderr


def test_reset_puts_a_module_back_and_keeps_the_learners_notebook(release, tmp_path):
    target = release / 'nbs/03_activations.ipynb'
    shutil.copy(COURSE.notebook_path(COURSE.find_module('activations')), target)
    mine = target.read_bytes()
    p = tito(release, 'module', 'reset', 'activations', check=True)
    assert 'back to its stubs' in p.stdout
    saved = list((release / '.tito/saved').glob('03_activations-*.ipynb'))
    assert len(saved) == 1 and saved[0].read_bytes() == mine
    assert target.read_bytes() == (release / 'milestones/released/03_activations.ipynb').read_bytes()
    assert "raise NotImplementedError('03 Activations: ReLUOp.forward" in (release / 'tinytorch/activations.py').read_text()


def test_edited_test_cell_is_flagged_in_the_release(release):
    target = release / 'nbs/05_dense.ipynb'
    nb = json.loads(target.read_text())
    first_test = next(i for i, c in enumerate(nb['cells']) if c['cell_type'] == 'code'
                      and 'test_' in ''.join(c['source']) and '#| export' not in ''.join(c['source']))
    del nb['cells'][first_test]
    target.write_text(json.dumps(nb, indent=1))
    out = tito(release, 'milestone', 'status', '--detailed', check=True).stdout
    line = next(l for l in out.splitlines() if '05 Dense' in l)
    assert line.strip().startswith('✏️') and 'released' in line
