"""Solution regions: find them, stub them, and release a learner repository without them.

The reference notebooks hold each module's ideas between `### BEGIN SOLUTION` and
`### END SOLUTION` (nbgrader's markers), always inside one function body of an exported cell.
A learner's notebook holds the same places between `### BEGIN YOUR CODE` and `### END YOUR CODE`,
filled with a stub: one `raise NotImplementedError(...)` naming the module and the function.

Used by the progress engine (milestones/engine.py: "stubs untouched" and "tests edited"),
`tito course release`, `tito course manifest` and `tito module reset` (milestones/tito.py), and
`make test`'s sync check (milestones/testrun.py). Tested by tests/test_release.py.

The manifest (`milestones/manifest.json`) records, per module, a hash of each test cell (every
code cell that is not exported) and of the protected test file `tests/modules/test_NN_*.py`, so
status can tell when a learner's tests differ from the released ones.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOLUTION = ('### BEGIN SOLUTION', '### END SOLUTION')
YOUR_CODE = ('### BEGIN YOUR CODE', '### END YOUR CODE')
MARKERS = (SOLUTION, YOUR_CODE)
MANIFEST = Path('milestones') / 'manifest.json'
RELEASED_DIR = Path('milestones') / 'released'
MANIFEST_VERSION = 1
_EXPORT = re.compile(r'^\s*#\|\s*export(s|i|_as)?\b', re.MULTILINE)


class SolutionError(ValueError):
    """A solution region that cannot be stubbed (unbalanced markers, outside a function...)."""


def cell_source(cell: dict) -> str:
    src = cell.get('source', '')
    return ''.join(src) if isinstance(src, list) else str(src)


def is_export_cell(cell: dict) -> bool:
    return cell.get('cell_type') == 'code' and bool(_EXPORT.search(cell_source(cell)))


def test_cells(nb: dict) -> list[tuple[int, str]]:
    """(cell number, source) of every code cell that is not exported: what nbdev_test runs as tests."""
    return [(i, cell_source(c)) for i, c in enumerate(nb.get('cells', []), 1)
            if c.get('cell_type') == 'code' and not is_export_cell(c)]


def _digest(text: str) -> str:
    norm = '\n'.join(line.rstrip() for line in text.strip('\n').splitlines())
    return hashlib.sha256(norm.encode('utf-8')).hexdigest()[:16]


# --------------------------------------------------------------------------- regions

@dataclass
class Region:
    cell: int        # index of the cell in the notebook
    begin: int       # 0-based line numbers of the marker lines within the cell
    end: int
    indent: str
    owner: str       # "broadcast_shape", "Im2Col.forward", "Mul.backward"
    hint: str        # first sentence of the owner's docstring ('' if none)
    learner: bool    # True for ### BEGIN YOUR CODE regions


def _owner(tree: ast.AST, line: int) -> tuple[str, str, int]:
    """(qualified name, docstring hint, body indentation) of the innermost function around `line` (1-based)."""
    best, parents = None, []

    def walk(node, stack):
        nonlocal best, parents
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) and child.body \
                    and child.lineno < line <= (child.end_lineno or child.lineno):
                first = child.body[0]   # the region must come after the docstring, if there is one
                has_doc = isinstance(first, ast.Expr) and isinstance(getattr(first, 'value', None), ast.Constant) \
                    and isinstance(first.value.value, str)
                if not has_doc or line > (first.end_lineno or first.lineno):
                    best, parents = child, list(stack)
            walk(child, stack + [child])
    walk(tree, [])
    if best is None:
        return '', '', -1
    name = best.name
    owner_class = next((p for p in reversed(parents) if isinstance(p, ast.ClassDef)), None)
    cls = owner_class.name if owner_class else None
    args = best.args.args
    if cls is None and args and args[0].arg == 'self' and isinstance(args[0].annotation, ast.Name):
        cls = args[0].annotation.id  # fastcore @patch: def backward(self: Mul, grad)
    doc = ast.get_docstring(best) or (ast.get_docstring(owner_class) if owner_class else '') or ''   # a method: its class's
    hint = re.split(r'(?<=[.;:])\s|\n\n', doc.strip(), maxsplit=1)[0].strip().rstrip(':;').strip() if doc else ''
    return (f'{cls}.{name}' if cls else name), hint, best.body[0].col_offset


def find_regions(nb: dict, where: str = 'notebook') -> list[Region]:
    """Every solution (or learner) region of the notebook's code cells, checked to be stubbable."""
    found = []
    for ci, cell in enumerate(nb.get('cells', [])):
        if cell.get('cell_type') != 'code':
            continue
        lines = cell_source(cell).splitlines()
        open_at, kind = None, None
        for li, text in enumerate(lines):
            stripped = text.strip()
            for k, (begin, end) in enumerate(MARKERS):
                if stripped == begin:
                    if open_at is not None:
                        raise SolutionError(f'{where}, cell {ci + 1}, line {li + 1}: {begin} inside another region')
                    open_at, kind = li, k
                elif stripped == end:
                    if open_at is None or kind != k:
                        raise SolutionError(f'{where}, cell {ci + 1}, line {li + 1}: {end} without its {begin}')
                    found.append((ci, open_at, li, kind, lines))
                    open_at = None
        if open_at is not None:
            raise SolutionError(f'{where}, cell {ci + 1}, line {open_at + 1}: {MARKERS[kind][0]} is never closed')
    regions = []
    for ci, b, e, kind, lines in found:
        cell = nb['cells'][ci]
        if not is_export_cell(cell):
            raise SolutionError(f'{where}, cell {ci + 1}: a solution region must be in an `#| export` cell')
        code = '\n'.join('' if l.lstrip().startswith(('#|', '%', '!')) else l for l in lines)
        try:
            tree = ast.parse(code)
        except SyntaxError as err:
            raise SolutionError(f'{where}, cell {ci + 1}: cannot parse the cell ({err.msg}, line {err.lineno})') from None
        owner, hint, body_col = _owner(tree, b + 1)
        indent = lines[b][:len(lines[b]) - len(lines[b].lstrip())]
        if not owner or len(indent) < body_col:
            raise SolutionError(f'{where}, cell {ci + 1}, line {b + 1}: a solution region must lie inside one '
                                'function body (after its signature and docstring)')
        regions.append(Region(ci, b, e, indent, owner, hint, kind == 1))
    return regions


def stub_line(module_label: str, notebook: str, owner: str, hint: str) -> str:
    what = f' ({hint.rstrip(".")})' if hint else ''
    msg = f'{module_label}: {owner}{what} is yours to write, in nbs/{notebook}; then run nbdev_export'
    return f'raise NotImplementedError({msg!r})'


def stub_notebook(nb: dict, module_label: str, notebook: str) -> tuple[dict, int]:
    """A copy of `nb` whose regions hold stubs between learner markers; returns (notebook, regions)."""
    nb = json.loads(json.dumps(nb))
    regions = find_regions(nb, f'nbs/{notebook}')
    by_cell: dict[int, list[Region]] = {}
    for r in regions:
        by_cell.setdefault(r.cell, []).append(r)
    for ci, rs in by_cell.items():
        lines = cell_source(nb['cells'][ci]).splitlines()
        for r in sorted(rs, key=lambda r: r.begin, reverse=True):
            lines[r.begin:r.end + 1] = [r.indent + YOUR_CODE[0],
                                        r.indent + stub_line(module_label, notebook, r.owner, r.hint),
                                        r.indent + YOUR_CODE[1]]
        text = '\n'.join(lines)
        try:
            ast.parse('\n'.join('' if l.lstrip().startswith(('#|', '%', '!')) else l for l in lines))
        except SyntaxError as err:
            raise SolutionError(f'nbs/{notebook}, cell {ci + 1}: the stubbed cell does not parse ({err.msg})') from None
        nb['cells'][ci]['source'] = text.splitlines(True)
    return nb, len(regions)


def stubs_untouched(nb: dict) -> bool:
    """True when the notebook has learner regions and every one still holds only its stub."""
    regions = find_regions(nb)
    if not regions or not all(r.learner for r in regions):
        return False
    for r in regions:
        body = [l.strip() for l in cell_source(nb['cells'][r.cell]).splitlines()[r.begin + 1:r.end]]
        body = [l for l in body if l and not l.startswith('#')]
        if len(body) != 1 or not body[0].startswith('raise NotImplementedError('):
            return False
    return True


def read_notebook(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding='utf-8'))


def write_notebook(path: Path, nb: dict) -> None:
    from .engine import atomic_write_text
    atomic_write_text(path, json.dumps(nb, indent=1, ensure_ascii=False) + '\n')


# --------------------------------------------------------------------------- manifest

def protected_test_path(root: Path, module) -> Path:
    return Path(root) / 'tests' / 'modules' / f'test_{module.stem}.py'


def manifest_entry(course, module) -> dict | None:
    nb_path = course.notebook_path(module)
    if not nb_path.is_file():
        return None
    cells = test_cells(read_notebook(nb_path))
    prot = protected_test_path(course.root, module)
    return {'notebook': module.notebook,
            'test_cells': [_digest(src) for _, src in cells],
            'protected_tests': _digest(prot.read_text(encoding='utf-8')) if prot.is_file() else None}


def build_manifest(course) -> dict:
    mods = {}
    for m in course.modules:
        entry = manifest_entry(course, m)
        if entry is not None:
            mods[m.key] = entry
    return {'version': MANIFEST_VERSION, 'modules': mods}


def load_manifest(root: Path) -> dict | None:
    """The released manifest, or None when the project has none (a malformed one is an error)."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding='utf-8'))
        if data.get('version') != MANIFEST_VERSION or not isinstance(data.get('modules'), dict):
            raise ValueError(f'expected {{"version": {MANIFEST_VERSION}, "modules": {{...}}}}')
        return data
    except (OSError, ValueError, AttributeError) as e:
        raise SolutionError(f'{path} is unreadable ({e}); restore it from the release (git checkout {MANIFEST})')


def tests_edited(course, module, manifest: dict | None) -> str | None:
    """Why the module's tests differ from the released ones, or None when they match (or no manifest)."""
    if manifest is None:
        return None
    released = manifest['modules'].get(module.key)
    current = manifest_entry(course, module)
    if released is None:
        return f'{module.notebook} is not in {MANIFEST}; run `tito course manifest` after changing its tests'
    if current['protected_tests'] != released.get('protected_tests'):
        prot = protected_test_path(course.root, module).relative_to(course.root)
        return f'{prot} differs from the released file' if current['protected_tests'] else f'{prot} is missing'
    want, have = released.get('test_cells', []), current['test_cells']
    if want != have:
        cells = test_cells(read_notebook(course.notebook_path(module)))
        for k, (w, h) in enumerate(zip(want, have)):
            if w != h:
                first = (cells[k][1].strip().splitlines() or [''])[0][:60]
                return f'test cell {cells[k][0]} (`{first}`) differs from the released notebook'
        return (f'the notebook has {len(have)} test cells; the released one has {len(want)}'
                ' (test cells were added or deleted)')
    return None


# --------------------------------------------------------------------------- release

def _tracked_files(root: Path) -> list[Path]:
    """The project's files as git sees them (tracked plus untracked-but-not-ignored), else a walk."""
    try:
        out = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=root,
                             capture_output=True, check=True).stdout.decode()
        return sorted({Path(p) for p in out.split('\0') if p and (root / p).is_file()})
    except (OSError, subprocess.CalledProcessError):
        skip = {'.git', '.venv', '.tito', '_docs', '__pycache__', '.pytest_cache', '.hypothesis'}
        return sorted(p.relative_to(root) for p in root.rglob('*')
                      if p.is_file() and not skip & set(p.relative_to(root).parts) and not p.name.endswith('.egg-info'))


def _generated(path: Path) -> bool:
    try:
        head = path.read_text(encoding='utf-8', errors='replace')[:600]
    except OSError:
        return False
    return 'AUTOGENERATED! DO NOT EDIT!' in head


def solution_lines(course) -> set[str]:
    """Distinctive lines of the reference solutions: what must never appear in a release."""
    lines = set()
    for m in course.modules:
        nb_path = course.notebook_path(m)
        if not nb_path.is_file():
            continue
        nb = read_notebook(nb_path)
        for r in find_regions(nb, f'nbs/{m.notebook}'):
            if r.learner:
                continue
            for l in cell_source(nb['cells'][r.cell]).splitlines()[r.begin + 1:r.end]:
                l = l.strip()
                if len(l) >= 12 and not l.startswith('#'):
                    lines.add(l)
    return lines


def _outside_regions(course) -> set[str]:
    """Stripped lines of the reference's exported code outside any region (they legitimately stay)."""
    keep = set()
    for m in course.modules:
        nb_path = course.notebook_path(m)
        if not nb_path.is_file():
            continue
        nb = read_notebook(nb_path)
        inside = {(r.cell, i) for r in find_regions(nb) for i in range(r.begin, r.end + 1)}
        for ci, cell in enumerate(nb['cells']):
            if cell.get('cell_type') == 'code':
                keep |= {l.strip() for i, l in enumerate(cell_source(cell).splitlines()) if (ci, i) not in inside}
    return keep


def text_lines(data: bytes) -> set[str]:
    """The stripped lines of a file's bytes; a notebook's cell sources are read out of its JSON first."""
    text = data.decode('utf-8', 'replace')
    try:
        nb = json.loads(text)
        if isinstance(nb, dict) and isinstance(nb.get('cells'), list):
            text = '\n'.join(cell_source(c) for c in nb['cells'] if isinstance(c, dict))
    except ValueError:
        pass
    return {l.strip() for l in text.splitlines()}


def scan_for_leaks(folder: Path, lines: set[str]) -> list[str]:
    """'where: line' for every solution line that stands as a line of a file or git object under `folder`."""
    hits = []

    def scan(name: str, data: bytes):
        hits.extend(f'{name}: {l}' for l in sorted(text_lines(data) & lines)[:3])

    for p in sorted(folder.rglob('*')):
        if p.is_file() and '.git' not in p.relative_to(folder).parts:
            scan(str(p.relative_to(folder)), p.read_bytes())
    if (folder / '.git').is_dir():
        listing = subprocess.run(['git', 'cat-file', '--batch-all-objects', '--batch-check=%(objectname) %(objecttype)'],
                                 cwd=folder, capture_output=True, text=True).stdout.split()
        for sha, kind in zip(listing[0::2], listing[1::2]):
            if kind == 'blob':
                data = subprocess.run(['git', 'cat-file', 'blob', sha], cwd=folder, capture_output=True).stdout
                scan(f'git object {sha[:10]}', data)
    return hits


def _git(folder: Path, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME='TinyTorch', GIT_AUTHOR_EMAIL='course@tinytorch.invalid',
               GIT_COMMITTER_NAME='TinyTorch', GIT_COMMITTER_EMAIL='course@tinytorch.invalid')
    subprocess.run(['git', *args], cwd=folder, check=True, capture_output=True, env=env)


def _tool(name: str) -> str:
    exe = Path(sys.executable).parent / name
    return str(exe) if exe.exists() else (shutil.which(name) or name)


def release(course, dest: Path, progress=print) -> dict:
    """Write a learner repository to `dest` (which must not exist, or be empty); returns a summary."""
    from .engine import TitoError
    root, dest = course.root, Path(dest).resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise TitoError(f'{dest} already exists and is not empty; choose a new folder for the release')
    if dest == root or root in dest.parents:
        raise TitoError(f'the release folder {dest} must be outside the project {root}')
    lib_rel, nbs_rel = course.lib_path.relative_to(root), course.nbs_path.relative_to(root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f'.{dest.name}.', dir=dest.parent))
    try:
        nb_modules = {m.notebook: m for m in course.modules}
        stubbed = regions = 0
        for rel in _tracked_files(root):
            src = root / rel
            if rel.parts[0] in ('.git',) or rel.parts[:2] == RELEASED_DIR.parts:
                continue
            if rel.parent == lib_rel and (rel.name == '_modidx.py' or _generated(src)):
                continue  # regenerated below from the stubbed notebooks
            target = work / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if rel.parent == nbs_rel and rel.suffix == '.ipynb' and rel.name in nb_modules:
                m = nb_modules[rel.name]
                nb, n = stub_notebook(read_notebook(src), m.label, m.notebook)
                text = json.dumps(nb, indent=1, ensure_ascii=False) + '\n'
                target.write_text(text, encoding='utf-8')
                (work / RELEASED_DIR).mkdir(parents=True, exist_ok=True)
                (work / RELEASED_DIR / rel.name).write_text(text, encoding='utf-8')
                stubbed, regions = stubbed + 1, regions + n
            else:
                shutil.copy2(src, target)
        progress(f'stubbed {regions} solution regions in {stubbed} notebooks; exporting tinytorch/ from the stubs ...')
        p = subprocess.run([_tool('nbdev_export')], cwd=work, capture_output=True, text=True)
        if p.returncode != 0:
            raise TitoError(f'nbdev_export failed in the release:\n{p.stdout}{p.stderr}')
        leaks_to_find = solution_lines(course) - _outside_regions(course)
        _git(work, '-c', 'init.defaultBranch=main', 'init', '-q')
        _git(work, 'add', '-A')
        _git(work, 'commit', '-q', '-m', 'TinyTorch course release: every module starts from its stubs')
        leaks = scan_for_leaks(work, leaks_to_find)
        if leaks:
            raise TitoError('the release would contain solution lines, so it was not written:\n  '
                            + '\n  '.join(leaks[:20]))
        if dest.exists(): dest.rmdir()
        os.replace(work, dest)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {'dest': dest, 'notebooks': stubbed, 'regions': regions, 'checked_lines': len(leaks_to_find)}


def reset_module(course, module, saved_dir: Path) -> tuple[Path, Path]:
    """Put a module's notebook back to its released stubs; the current one is kept in `saved_dir`.
    Returns (notebook path, saved copy)."""
    import datetime as _dt
    from .engine import TitoError
    nb_path = course.notebook_path(module)
    released = course.root / RELEASED_DIR / module.notebook
    if released.is_file():
        fresh = read_notebook(released)
    elif nb_path.is_file():
        fresh, _ = stub_notebook(read_notebook(nb_path), module.label, module.notebook)
    else:
        raise TitoError(f'{nb_path.relative_to(course.root)} does not exist and there is no released copy '
                        f'in {RELEASED_DIR}/ to restore it from')
    saved = None
    if nb_path.is_file():
        stamp = _dt.datetime.now().strftime('%Y%m%d-%H%M%S')
        saved = Path(saved_dir) / f'{module.stem}-{stamp}.ipynb'
        n = 1
        while saved.exists():
            saved, n = Path(saved_dir) / f'{module.stem}-{stamp}-{n}.ipynb', n + 1
        saved.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(nb_path, saved)
    write_notebook(nb_path, fresh)
    return nb_path, saved
