"""`python -m milestones.nbrun NOTEBOOK --report OUT.json`: run a notebook's tests and say what ran.

nbdev_test exits 0 when it ran nothing (an `nbs/.notest` file, `skip_exec: true` frontmatter, a
notebook moved away mid-run), so the progress engine (milestones/engine.py) never trusts an exit
code. This runner executes the notebook with execnb's CaptureShell under nbdev_test's own cell
rules (IN_TEST set, cells flagged with settings.ini's `tst_flags` or `#| eval: false` skipped) but
ignores the file-level skips, and writes a JSON report: how many code and test cells should run and
did run, the first error with its traceback, and (from milestones/probe.py) which package files
and data files the run used. `make test` (milestones/testrun.py) uses it too.
"""
from __future__ import annotations

import argparse
import configparser
import json
import os
import sys
import time
import traceback
from pathlib import Path


def _flags(root: Path) -> set[str]:
    cfg = configparser.ConfigParser(delimiters=['='], interpolation=None)
    cfg.read(root / 'settings.ini', encoding='utf-8')
    return set(cfg['DEFAULT'].get('tst_flags', 'notest').split())


def run(nb_path: Path, root: Path) -> dict:
    from . import probe
    os.environ['IN_TEST'] = '1'
    if str(root) not in sys.path[:1]:
        sys.path.insert(0, str(root))
    result = {'notebook': str(nb_path), 'cells': 0, 'cells_run': 0, 'skipped': 0, 'test_cells': 0,
              'test_cells_run': 0, 'error': None, 'seconds': 0.0}
    start = time.monotonic()
    try:
        from execnb.shell import CaptureShell
        from nbdev.process import NBProcessor
        nb = NBProcessor(nb_path, process=True).nb
    except Exception as e:  # unreadable notebook, missing toolchain
        result['error'] = {'cell': None, 'type': type(e).__name__, 'message': str(e),
                           'traceback': traceback.format_exc()}
        return result
    flags = _flags(root)

    def skip(cell) -> bool:
        if cell.cell_type != 'code':
            return True
        direc = getattr(cell, 'directives_', {}) or {}
        if 'nbdev_export' + '(' in cell.source or direc.get('eval:', [''])[0].lower() == 'false' \
                or flags & set(direc):
            result['skipped'] += 1
            return True
        return False

    def is_test(cell) -> bool:
        return not {'export', 'exports', 'exporti', 'export_as'} & set(getattr(cell, 'directives_', {}) or {})

    code_cells = [c for c in nb.cells if c.cell_type == 'code']
    result['cells'] = len(code_cells)
    result['test_cells'] = sum(is_test(c) for c in code_cells)

    def done(cell):
        result['cells_run'] += 1
        result['test_cells_run'] += is_test(cell)

    shell = CaptureShell(nb_path)
    probe.install()   # after our own imports: only what the notebook reads counts
    cwd = os.getcwd()
    try:
        os.chdir(nb_path.parent)
        shell.run_all(nb, exc_stop=True, preproc=skip, postproc=lambda c: None if shell.exc else done(c))
    except BaseException as e:
        exc = shell.exc or e
        idx = getattr(shell, '_cell_idx', None)
        tb = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        result['error'] = {'cell': idx, 'type': type(exc).__name__, 'message': str(exc), 'traceback': tb}
        if isinstance(e, KeyboardInterrupt):
            raise
    finally:
        os.chdir(cwd)
        result['seconds'] = round(time.monotonic() - start, 3)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog='python -m milestones.nbrun', description=__doc__.split('\n\n')[0])
    ap.add_argument('notebook', type=Path)
    ap.add_argument('--report', type=Path, required=True, help='where to write the JSON report')
    ap.add_argument('--root', type=Path, default=Path.cwd(), help='project root (default: the current folder)')
    args = ap.parse_args(argv)
    root = args.root.resolve()
    nb = args.notebook if args.notebook.is_absolute() else (Path.cwd() / args.notebook)
    res = run(nb.resolve(), root)
    from . import probe
    res.update(probe.report(str(root)))
    tmp = args.report.with_name(args.report.name + '.tmp')
    tmp.write_text(json.dumps(res), encoding='utf-8')
    os.replace(tmp, args.report)
    ok = res['error'] is None and res['cells_run'] == res['cells'] - res['skipped']
    if res['error']:
        sys.stderr.write(res['error']['traceback'])
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
