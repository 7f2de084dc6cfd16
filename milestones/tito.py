"""`tito`: the TinyTorch milestone CLI (console script declared in settings.ini).

  tito milestone status [--detailed] [--write-docs]   progress per milestone (make milestone-status)
  tito milestone timeline [--horizontal]              the course as a tree, or one line
  tito milestone test NAME [--fresh]                  a milestone's module tests + capability test
  tito milestone unlock                               unlock the next milestone when it has earned it
  tito module status | tito module test NAME          one row per module | test one module now
  tito module reset NAME                              back to the released stubs (your version kept in .tito/saved/)
  tito course release DIR                             write a learner repository (solutions stubbed) to DIR
  tito course manifest [--check]                      record (or check) the released test cells' hashes
  tito system doctor                                  environment report from tinytorch.setup
  tito docs build                                     the docs site (milestones/site.py; make docs)
  tito serve [--port 8000] [--model PATH]             serve the model over HTTP (tinytorch.capstone; make serve)

Built on the progress engine (milestones/engine.py, which also holds the unlock policy: this file
only parses and prints), the solution-region tools (milestones/solutions.py), the text renderers
(milestones/render.py) and the progress page writer (milestones/progress.py). Tested by
tests/test_cli.py and tests/test_release.py.
Exit codes: 0 success, 1 a check failed, 2 bad usage or unknown name.
"""
from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from .engine import Engine, TitoError, run_capability_test, STATE_DIR, SAVED_DIR
from .solutions import SolutionError
from .render import render_module_table, render_status, render_timeline, use_color, Style

TAIL_LINES = 60


def _print(*args, **kw):
    print(*args, **kw, flush=True)


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _tail(text: str, n: int = TAIL_LINES) -> str:
    lines = text.rstrip().splitlines()
    skipped = len(lines) - n
    return '\n'.join(([f'... ({skipped} earlier lines not shown)'] if skipped > 0 else []) + lines[-n:])


def _engine(args) -> Engine:
    return Engine(args.root, progress=_progress)


# --------------------------------------------------------------------------- milestone commands

def cmd_milestone_status(args) -> int:
    eng = _engine(args)
    states = eng.module_states()
    ms_states = eng.milestone_states(states)
    _print(render_status(eng.course, states, ms_states, detailed=args.detailed,
                         color=use_color(sys.stdout), runs=len(eng.runs)))
    if args.write_docs:
        from .progress import write_progress
        md, svg = write_progress(eng.course.doc_path, engine=eng)
        _print(f'Wrote {md.relative_to(eng.root)} and {svg.relative_to(eng.root)}')
    return 0


def cmd_milestone_timeline(args) -> int:
    eng = _engine(args)
    ms_states = eng.milestone_states()
    _print(render_timeline(eng.course, ms_states, horizontal=args.horizontal, color=use_color(sys.stdout)))
    return 0


def _module_line(eng: Engine, st) -> str:
    m = eng.course.module_by_key[st.key]
    how = 'cached' if st.cached else ('not run' if st.state in ('absent', 'todo', 'edited', 'untested')
                                      else f'ran in {st.seconds:.1f} s')
    return f'  {st.icon} {m.label}: {st.reason} ({how})'


def cmd_milestone_test(args) -> int:
    eng = _engine(args)
    ms = eng.course.find_milestone(' '.join(args.name))
    s = Style(use_color(sys.stdout))
    _print(s(f'Milestone test: {ms.name}', 'bold'))
    _print(f'Module tests ({len(ms.modules)}):')
    states = eng.module_states(list(ms.modules), use_cache=not args.fresh)
    for st in states.values():
        _print(_module_line(eng, st))
    modules_ok = all(st.state == 'pass' for st in states.values())
    _print(f'Capability test: {ms.capability_test}  ("{ms.capability}")')
    _progress(f'running pytest {ms.capability_test} ...')
    cap = run_capability_test(eng.root, ms, stream=sys.stdout if args.live else None)
    _print(f'  {"✅" if cap.ok else "❌"} {cap.summary}')
    if not cap.ok and cap.output and not args.live:
        _print(_tail(cap.output))
    if modules_ok and cap.ok:
        _print(f'Result: ✅ {ms.name}: all {len(ms.modules)} modules and the capability test pass')
        return 0
    bad = [eng.course.module_by_key[k].label for k, st in states.items() if st.state != 'pass']
    cap_word = ('capability test not written yet' if cap.missing else
                'capability test skipped tests' if cap.skipped and not cap.failed else 'capability test failed')
    parts = ([f'modules not passing: {", ".join(bad)}'] if bad else []) + ([] if cap.ok else [cap_word])
    _print(f'Result: ❌ {ms.name}: {"; ".join(parts)}')
    return 1


def cmd_milestone_unlock(args) -> int:
    eng = _engine(args)
    res = eng.unlock_next(stream=sys.stdout)
    if res.all_done:
        _print(f'All {len(eng.course.milestones)} milestones are already unlocked: '
               + ', '.join(f'{m.name} ({res.unlocked[m.key]["date"]})' for m in eng.course.milestones))
        return 0
    ms = res.milestone
    if res.problems:
        _print(f'Cannot unlock {ms.name} yet: an earlier milestone regressed.')
        for p in res.problems:
            _print(f'  ⚠️ {p}')
    if res.missing:
        n = len(res.missing)
        _print(f'Cannot unlock {ms.name} yet: {n} of its {len(ms.modules)} modules {"does" if n == 1 else "do"} not pass.')
        words = {'absent': 'not started', 'todo': 'not started', 'locked': 'waiting', 'edited': 'tests edited'}
        for st in res.missing:
            m = eng.course.module_by_key[st.key]
            _print(f'  {st.icon} {m.label} ({words.get(st.state, "failing")}): {st.reason}')
        _print(f'The capability test ({ms.capability_test}) runs once every module passes.')
    if res.problems or res.missing:
        return 1
    cap = res.capability
    if not res.unlocked_now:
        _print(f'Cannot unlock {ms.name} yet: every module passes, but the capability test does not.')
        _print(f'  ❌ {ms.capability_test}: {cap.summary}')
        for test, why in cap.skipped:
            _print(f'  skipped: {test}: {why}')
        return 1
    _print(f'🔓 Unlocked {ms.name} on {res.record["date"]} (recorded in {eng.unlocks_path.relative_to(eng.root)}).')
    _print(f'  ✅ {ms.capability}')
    for line in ms.i_can:
        _print(f'     ✅ {line}')
    nxt = eng.next_locked()
    if nxt:
        _print(f'Next milestone: {nxt.name} (modules: '
               + ', '.join(eng.course.module_by_key[k].name for k in nxt.modules) + ')')
    else:
        _print('That was the last milestone: every milestone is unlocked.')
    return 0


# --------------------------------------------------------------------------- module commands

def cmd_module_status(args) -> int:
    eng = _engine(args)
    states = eng.module_states()
    _print(render_module_table(eng.course, states, color=use_color(sys.stdout), runs=len(eng.runs)))
    return 0


def cmd_module_test(args) -> int:
    eng = _engine(args)
    m = eng.course.find_module(' '.join(args.name))
    st = eng.test_module(m.key)
    if st.state in ('absent', 'todo', 'edited'):
        _print(f'{st.icon} {m.label}: {st.reason}')
        return 1
    _print(f'{st.icon} {m.label}: {st.reason} ({st.seconds:.1f} s)')
    if st.state != 'pass':
        _print('--- test output ---')
        _print(st.output.rstrip())
        return 1
    return 0


def cmd_module_reset(args) -> int:
    from .solutions import reset_module
    eng = _engine(args)
    m = eng.course.find_module(' '.join(args.name))
    nb, saved = reset_module(eng.course, m, eng.saved_dir)
    rel = lambda p: p.relative_to(eng.root) if eng.root in p.parents else p
    _print(f'{m.label}: {rel(nb)} is back to its stubs.' + (f' Your version is kept at {rel(saved)}.' if saved else ''))
    from .testrun import _tool
    import subprocess
    p = subprocess.run([_tool('nbdev_export')], cwd=eng.root, capture_output=True, text=True)
    if p.returncode != 0:
        raise TitoError(f'nbdev_export failed after the reset; run it yourself to see why:\n{p.stdout}{p.stderr}')
    _print(f'Re-exported {eng.course.lib_path.relative_to(eng.root)}/ with nbdev_export.')
    return 0


# --------------------------------------------------------------------------- course (instructors)

def cmd_course_release(args) -> int:
    from .solutions import release
    eng = _engine(args)
    summary = release(eng.course, args.dest, progress=_progress)
    _print(f'Wrote a learner repository to {summary["dest"]}: {summary["notebooks"]} notebooks, '
           f'{summary["regions"]} solution regions replaced by stubs, one git commit; checked that none of '
           f'{summary["checked_lines"]} solution lines appears in any file or git object.')
    _print(f'Next: cd {summary["dest"]} && make milestone-status')
    return 0


def cmd_course_manifest(args) -> int:
    from .solutions import MANIFEST, build_manifest, load_manifest
    from .engine import atomic_write_json
    eng = _engine(args)
    want = build_manifest(eng.course)
    if args.check:
        have = load_manifest(eng.root)
        if have == want:
            _print(f'{MANIFEST} matches the notebooks and protected tests')
            return 0
        changed = sorted(k for k in set(want['modules']) | set((have or {}).get('modules', {}))
                         if (have or {}).get('modules', {}).get(k) != want['modules'].get(k))
        _print(f'{MANIFEST} is out of date for: {", ".join(changed) or "its format"}; run `tito course manifest`')
        return 1
    atomic_write_json(eng.root / MANIFEST, want)
    _print(f'Wrote {MANIFEST} ({len(want["modules"])} modules)')
    return 0


# --------------------------------------------------------------------------- system and docs

def cmd_system_doctor(args) -> int:
    course = Engine(args.root).course
    not_exported = ('The Setup module is not exported yet: write nbs/01_setup.ipynb, then run '
                    '`nbdev_export` (or `make export`) and try `tito system doctor` again.')
    if not (course.lib_path / 'setup.py').is_file():  # never report some other installed copy
        _print(not_exported)
        return 1
    root = str(course.root)
    if root not in sys.path:
        sys.path.insert(0, root)
    try:
        import importlib
        setup = importlib.import_module('tinytorch.setup')
    except ModuleNotFoundError as e:
        if e.name in ('tinytorch', 'tinytorch.setup'):
            _print(not_exported)
            return 1
        raise TitoError(f'tinytorch.setup failed to import: {e}')
    except Exception as e:  # a broken export must not look like a tito crash
        raise TitoError(f'tinytorch.setup failed to import: {type(e).__name__}: {e}')
    if hasattr(setup, 'print_system_report'):
        setup.print_system_report()
        return 0
    if hasattr(setup, 'system_report'):
        for k, v in setup.system_report().items():
            _print(f'{k:>20}: {v}')
        return 0
    raise TitoError('tinytorch.setup has neither print_system_report() nor system_report(); '
                    're-export nbs/01_setup.ipynb')


def cmd_docs_build(args) -> int:
    import importlib
    try:
        site = importlib.import_module('milestones.site')
    except ModuleNotFoundError as e:
        if e.name == 'milestones.site':
            raise TitoError('the docs builder milestones/site.py is not there yet, so `tito docs build` '
                            'cannot run')
        raise
    if not hasattr(site, 'build_site'):
        raise TitoError('milestones/site.py has no build_site() function')
    params = inspect.signature(site.build_site).parameters
    result = site.build_site(root=Engine(args.root).root) if 'root' in params else site.build_site()
    if result is not None:
        _print(str(result))  # build_site's SiteResult prints as a summary
    return int(getattr(result, 'exit_code', 0))


def cmd_serve(args) -> int:
    try:
        from tinytorch.capstone import serve
    except ImportError as e:
        raise TitoError(f'the server is module 16 (tinytorch.capstone), which does not import: {e}')
    try:
        return serve(port=args.port, host=args.host, model=args.model, registry=args.registry, workers=args.workers,
                     batching=not args.no_batching)
    except (ImportError, FileNotFoundError, ValueError, RuntimeError) as e:
        raise TitoError(str(e))


# --------------------------------------------------------------------------- argument parsing

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog='tito', description='TinyTorch milestone system: track, test and '
                                'unlock your progress through the course.')
    p.add_argument('--root', type=Path, default=None,
                   help='project folder (default: the nearest folder holding milestones/milestones.json)')
    groups = p.add_subparsers(dest='group', metavar='{milestone,module,course,system,docs,serve}')

    g = groups.add_parser('milestone', help='milestone status, timeline, tests and unlocks')
    g.set_defaults(group_parser=g)
    sub = g.add_subparsers(dest='command', metavar='{status,timeline,test,unlock}')
    c = sub.add_parser('status', help='progress of every milestone (tests stale modules, cached)')
    c.add_argument('--detailed', action='store_true', help='list every module with the reason for its state')
    c.add_argument('--write-docs', action='store_true', help='also write progress.md and timeline.svg into the docs folder')
    c.set_defaults(func=cmd_milestone_status)
    c = sub.add_parser('timeline', help='the course as a vertical tree')
    c.add_argument('--horizontal', action='store_true', help='one line: Foundation → ... → Serving')
    c.set_defaults(func=cmd_milestone_timeline)
    c = sub.add_parser('test', help="run a milestone's module tests and its capability test")
    c.add_argument('name', nargs='+', help='milestone key, name or short name, e.g. foundation or Neural Architecture')
    c.add_argument('--fresh', action='store_true', help='re-run module tests even when cached')
    c.add_argument('--live', action='store_true', help="show the capability test's output as it runs")
    c.set_defaults(func=cmd_milestone_test)
    c = sub.add_parser('unlock', help='unlock the next milestone if its modules and capability test pass')
    c.set_defaults(func=cmd_milestone_unlock)

    g = groups.add_parser('module', help='one module at a time')
    g.set_defaults(group_parser=g)
    sub = g.add_subparsers(dest='command', metavar='{status,test,reset}')
    c = sub.add_parser('status', help='table of all modules and their state')
    c.set_defaults(func=cmd_module_status)
    c = sub.add_parser('test', help="run one module's notebook tests and protected tests now (uncached)")
    c.add_argument('name', nargs='+', help='module key, name, notebook or number, e.g. tensor, Tensors, 02_tensor, 2')
    c.set_defaults(func=cmd_module_test)
    c = sub.add_parser('reset', help=f'put a module back to its released stubs (your version is kept in {STATE_DIR}/{SAVED_DIR}/)')
    c.add_argument('name', nargs='+', help='module key, name, notebook or number')
    c.set_defaults(func=cmd_module_reset)

    g = groups.add_parser('course', help='for instructors: release a learner repository, keep the manifest')
    g.set_defaults(group_parser=g)
    sub = g.add_subparsers(dest='command', metavar='{release,manifest}')
    c = sub.add_parser('release', help='write a learner repository (solutions replaced by stubs) to DEST')
    c.add_argument('dest', type=Path, help='a new (or empty) folder')
    c.set_defaults(func=cmd_course_release)
    c = sub.add_parser('manifest', help='write milestones/manifest.json (hashes of the released tests)')
    c.add_argument('--check', action='store_true', help='only check that it is up to date')
    c.set_defaults(func=cmd_course_manifest)

    g = groups.add_parser('system', help='this machine')
    g.set_defaults(group_parser=g)
    sub = g.add_subparsers(dest='command', metavar='{doctor}')
    c = sub.add_parser('doctor', help='environment report (Python, NumPy/BLAS, cores, memory, matmul GFLOP/s)')
    c.set_defaults(func=cmd_system_doctor)

    g = groups.add_parser('docs', help='documentation site')
    g.set_defaults(group_parser=g)
    sub = g.add_subparsers(dest='command', metavar='{build}')
    c = sub.add_parser('build', help='build the HTML docs site')
    c.set_defaults(func=cmd_docs_build)

    g = groups.add_parser('serve', help='serve the Fashion-MNIST model over HTTP (Open Inference Protocol, page at /)')
    g.add_argument('--port', type=int, default=8000, help='TCP port (default 8000)')
    g.add_argument('--host', default='127.0.0.1', help='address to bind (default 127.0.0.1, this machine only)')
    g.add_argument('--model', type=Path, default=None, help="serve this model file instead of the registry's production version")
    g.add_argument('--registry', type=Path, default=None, help='model registry folder (default $TINYTORCH_REGISTRY or ~/.cache/tinytorch/registry)')
    g.add_argument('--workers', type=int, default=1, help='worker processes (default 1)')
    g.add_argument('--no-batching', action='store_true', help='turn dynamic batching off')
    g.set_defaults(func=cmd_serve)
    return p


def _ensure_utf8_stdout() -> None:
    """Keep ✅ 🔄 ⏳ and the bars printable when the locale is not UTF-8 (e.g. piped under LANG=C)."""
    for stream in (sys.stdout, sys.stderr):
        enc = (getattr(stream, 'encoding', '') or '').lower().replace('-', '')
        if enc != 'utf8' and hasattr(stream, 'reconfigure'):
            try:
                stream.reconfigure(encoding='utf-8', errors='replace')
            except (ValueError, OSError):
                pass


def main(argv=None) -> int:
    _ensure_utf8_stdout()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, 'func', None):  # `tito` or `tito milestone` alone: show the relevant help
        (getattr(args, 'group_parser', None) or parser).print_help(sys.stderr)
        return 2
    try:
        return args.func(args)
    except TitoError as e:
        print(f'tito: {e}', file=sys.stderr)
        return e.code
    except SolutionError as e:
        print(f'tito: {e}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('tito: interrupted', file=sys.stderr)
        return 130


if __name__ == '__main__':
    sys.exit(main())
