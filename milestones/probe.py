"""What a test run really used: the package files it imported and the data files it read.

Installed inside the processes that test a module (the notebook runner milestones/nbrun.py, and
pytest through `-p milestones.probe` for the protected tests), so the progress engine
(milestones/engine.py) can key its cache on exactly those inputs rather than on a guess from
import statements. Reads are seen with an audit hook on `open`; imports from `sys.modules`.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

_state = {'reads': set(), 'start': time.time(), 'installed': False}


def _excluded_prefixes() -> tuple[str, ...]:
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, tempfile.gettempdir(), '/proc', '/sys', '/dev',
                '/etc', '/usr/lib', '/usr/local/lib', '/run', '/var/tmp'}
    home = os.path.expanduser('~')
    prefixes |= {os.path.join(home, d) for d in ('.cache/matplotlib', '.config', '.cache/fontconfig', '.ipython')}
    return tuple(os.path.realpath(p) + os.sep for p in prefixes if p)


def _hook(event, args):
    if event != 'open' or not args:
        return
    path, mode = args[0], args[1] if len(args) > 1 else None
    if not isinstance(path, (str, bytes, os.PathLike)):
        return
    flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
    writing = (isinstance(mode, str) and not set(mode) & {'r', '+'}) or \
              (mode is None and flags & os.O_ACCMODE == os.O_WRONLY)
    if not writing:
        _state['reads'].add(os.path.abspath(os.fsdecode(path)))   # relative to the cwd of this moment


def install() -> None:
    """Start recording file reads in this process (idempotent; audit hooks cannot be removed)."""
    if not _state['installed']:
        _state['start'] = time.time()
        sys.addaudithook(_hook)
        _state['installed'] = True


def report(root: str, lib_name: str = 'tinytorch') -> dict:
    """{'loaded': package files imported (relative to root), 'data_files': absolute paths of other
    files read that existed before the run began and live outside the interpreter and temp folders}."""
    root = os.path.realpath(root)
    lib_dir = os.path.join(root, lib_name) + os.sep
    loaded = set()
    for name, mod in list(sys.modules.items()):
        if name == lib_name or name.startswith(lib_name + '.'):
            f = getattr(mod, '__file__', None)
            if f and os.path.realpath(f).startswith(lib_dir):
                loaded.add(os.path.relpath(os.path.realpath(f), root))
    project_excluded = tuple(os.path.join(root, d) + os.sep for d in (lib_name, '.git', '.venv', 'milestones'))
    excluded = _excluded_prefixes() + project_excluded
    data = set()
    for p in _state['reads']:
        try:
            real = os.path.realpath(os.path.join(root, p) if not os.path.isabs(p) else p)
            st = os.stat(real)
        except OSError:
            continue
        in_project = real.startswith(root + os.sep)
        if not os.path.isfile(real) or real.startswith(project_excluded if in_project else excluded) \
                or '__pycache__' in real or '.egg-info' in real \
                or real.endswith('.pyc') or real == os.path.join(root, 'settings.ini'):
            continue
        if st.st_mtime >= _state['start']:
            continue  # written by this run: an output, not an input
        if real.endswith(('.ipynb',)) and real.startswith(root + os.sep):
            continue  # the notebook under test is keyed on its own
        data.add(real)
    return {'loaded': sorted(loaded), 'data_files': sorted(data)}


def write_report(path: str, root: str, extra: dict | None = None) -> None:
    obj = report(root)
    obj.update(extra or {})
    tmp = f'{path}.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(obj, f)
    os.replace(tmp, path)


# --------------------------------------------------------------------------- pytest plugin

def pytest_configure(config):
    install()


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get('TITO_PROBE_OUT')
    if out:
        write_report(out, os.environ.get('TITO_PROBE_ROOT') or os.getcwd())
