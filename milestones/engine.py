"""Progress engine: what state each TinyTorch module and milestone is in, and when a milestone unlocks.

Reads the course definition (milestones/milestones.json), tests module notebooks with the notebook
runner (milestones/nbrun.py) and their protected tests `tests/modules/test_NN_*.py` with pytest,
caches results under `.tito/`, and stores milestone unlocks. Used by the `tito` CLI
(milestones/tito.py), the progress page writer (milestones/progress.py), `make test`
(milestones/testrun.py) and the tests in tests/test_cli.py, tests/test_milestones_*.py.

Module states (icons and words live in milestones/states.py; this file has none):
  pass      the notebook's test cells all ran and passed, and so did its protected tests
  fail      started (solution regions edited) but a test fails
  locked    it fails, and an earlier module it imports is not passing yet: that one comes first
  edited    its test cells or protected tests differ from the released ones (milestones/manifest.json)
  todo      every solution region still holds its stub
  absent    the notebook is not there
  untested  only with module_states(run=False): no current cached result

A cached result is reused only when everything that could change it is unchanged: the notebook, the
protected test file, its manifest entry, settings.ini, the Python/NumPy/nbdev/fastcore/execnb
versions, and every package file and data file the run actually loaded (recorded by
milestones/probe.py inside the test processes). Timed-out or killed runs are never cached, nor a
run whose inputs changed while it ran. Test runs are serialised by a lock in `.tito/`.
"""
from __future__ import annotations

import configparser
import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import select
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from .states import BROKEN, module_look, milestone_look

DATA_FILE = Path('milestones') / 'milestones.json'
STATE_DIR = '.tito'
CACHE_FILE = Path('cache') / 'modules.json'   # inside STATE_DIR; `make clean` removes .tito/cache
UNLOCKS_FILE = 'unlocks.json'                 # the learner's dated history: never cleaned
LOCK_FILE = Path('cache') / 'lock'
SAVED_DIR = 'saved'                           # notebooks kept by `tito module reset`
CACHE_VERSION = 2
UNLOCKS_VERSION = 1
DEFAULT_TIMEOUT = 900     # seconds for one notebook or one protected-test run; TITO_TEST_TIMEOUT overrides
OUTPUT_KEEP = 6000        # characters of a failing run's output kept in the cache
_SMALL_FILE = 4 << 20     # data files up to this size are keyed on their content, larger ones on size+mtime
_STUB_MODULE = re.compile(r'NotImplementedError: (\d\d) ')


class TitoError(Exception):
    """An error the user can act on; the CLI prints it without a traceback.

    `code` is the process exit code (2 for bad names/usage, 1 otherwise)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def warn(message: str) -> None:
    print(f'warning: {message}', file=sys.stderr)


# --------------------------------------------------------------------------- atomic files

def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


_UMASK = _umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so readers see the old file or the new one, never half of one:
    a temporary file in the same folder, fsynced, then os.replace()."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual mode
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode('utf-8'))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=True) + '\n')


def keep_backup(path: Path) -> Path | None:
    """Move `path` aside as `<name>.corrupt-<timestamp>[-n]`; earlier backups are never overwritten."""
    stamp = _dt.datetime.now().strftime('%Y%m%dT%H%M%S')
    backup, n = path.with_name(f'{path.name}.corrupt-{stamp}'), 1
    while backup.exists():
        backup, n = path.with_name(f'{path.name}.corrupt-{stamp}-{n}'), n + 1
    try:
        os.replace(path, backup)
        return backup
    except OSError:
        return None


def _read_json_object(path: Path, version: int) -> dict:
    obj = json.loads(path.read_text(encoding='utf-8'))
    if not isinstance(obj, dict) or obj.get('version') != version:
        raise ValueError(f'expected a JSON object with "version": {version}')
    return obj


def _load_state_file(path: Path, version: int, validate) -> tuple[dict | None, bool]:
    """Read a `.tito/` JSON state file -> (object or None, was_corrupt). Missing -> (None, False).
    Unreadable or malformed -> a warning, the bad copy kept beside it, and (None, True)."""
    if not path.exists():
        return None, False
    try:
        obj = _read_json_object(path, version)
        validate(obj)
        return obj, False
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as e:
        backup = keep_backup(path)
        kept = f'; the unreadable copy is kept at {backup}' if backup else ''
        warn(f'{path} is corrupt or unreadable ({type(e).__name__}: {e}); rebuilding it{kept}')
        return None, True


# --------------------------------------------------------------------------- course definition

@dataclass(frozen=True)
class Module:
    key: str
    name: str
    notebook: str  # file name inside nbs/
    package: str   # file name inside the library folder
    number: int    # 1-based course position

    @property
    def stem(self) -> str:
        return Path(self.notebook).stem

    @property
    def label(self) -> str:
        return f'{self.number:02d} {self.name}'


@dataclass(frozen=True)
class Milestone:
    key: str
    name: str
    short: str
    emoji: str
    modules: tuple
    capability: str
    i_can: tuple
    capability_test: str
    number: int


def _norm(name: str) -> str:
    return re.sub(r'[\s_\-]+', ' ', str(name)).strip().casefold()


class Course:
    """The five milestones and sixteen modules, as the data file defines them."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.data_path = self.root / DATA_FILE
        try:
            data = json.loads(self.data_path.read_text(encoding='utf-8'))
        except FileNotFoundError:
            raise TitoError(f'course definition not found: expected {self.data_path}')
        except (OSError, ValueError) as e:
            raise TitoError(f'cannot read the course definition {self.data_path}: {e}')
        try:
            self.modules = [Module(m['key'], m['name'], m['notebook'], m['package'], i + 1)
                            for i, m in enumerate(data['modules'])]
            self.module_by_key = {m.key: m for m in self.modules}
            self.milestones = []
            for i, ms in enumerate(data['milestones']):
                unknown = [k for k in ms['modules'] if k not in self.module_by_key]
                if unknown:
                    raise ValueError(f'milestone {ms["key"]!r} lists unknown modules {unknown}')
                self.milestones.append(Milestone(
                    ms['key'], ms['name'], ms.get('short', ms['name']), ms.get('emoji', ''),
                    tuple(ms['modules']), ms['capability'], tuple(ms.get('i_can', ())),
                    ms['capability_test'], i + 1))
        except (KeyError, TypeError, ValueError) as e:
            raise TitoError(f'{self.data_path} is malformed: {type(e).__name__}: {e}. Expected '
                            '{"modules": [{key, name, notebook, package}...], "milestones": '
                            '[{key, name, modules, capability, capability_test}...]}')
        self.milestone_by_key = {m.key: m for m in self.milestones}
        self.lib_path, self.lib_name, self.nbs_path, self.doc_path = _read_settings(self.root)

    def notebook_path(self, module: Module) -> Path:
        return self.nbs_path / module.notebook

    def protected_tests(self, module: Module) -> Path:
        return self.root / 'tests' / 'modules' / f'test_{module.stem}.py'

    def module_of_package(self, filename: str) -> Module | None:
        return next((m for m in self.modules if m.package == filename), None)

    def milestone_of(self, module_key: str) -> Milestone | None:
        return next((m for m in self.milestones if module_key in m.modules), None)

    def find_milestone(self, name: str) -> Milestone:
        """Accept a key ('architecture'), a full name ('Neural Architecture', any case) or a short name."""
        wanted = _norm(name)
        for ms in self.milestones:
            if wanted in {_norm(ms.key), _norm(ms.name), _norm(ms.short), str(ms.number)}:
                return ms
        valid = ', '.join(f'{ms.key} ("{ms.name}")' for ms in self.milestones)
        raise TitoError(f'unknown milestone {name!r}. Valid names: {valid}', code=2)

    def find_module(self, name: str) -> Module:
        """Accept a key ('tensor'), a name ('Tensors'), a notebook ('02_tensor[.ipynb]') or a number ('2')."""
        wanted = _norm(name)
        for m in self.modules:
            names = {_norm(m.key), _norm(m.name), _norm(m.stem), _norm(m.notebook), str(m.number),
                     f'{m.number:02d}'}
            if wanted in names:
                return m
        valid = ', '.join(m.key for m in self.modules)
        raise TitoError(f'unknown module {name!r}. Valid names: {valid} '
                        '(or a module name like "Tensors", notebook like "02_tensor", or number)', code=2)


def _read_settings(root: Path):
    """lib_path, lib_name, nbs_path and doc_path from settings.ini (nbdev 2), with nbdev's defaults."""
    cfg = configparser.ConfigParser(delimiters=['='], interpolation=None)
    try:
        cfg.read(root / 'settings.ini', encoding='utf-8')
    except configparser.Error:
        pass
    d = cfg['DEFAULT']
    lib_name = d.get('lib_name', 'tinytorch')
    lib_path = root / d.get('lib_path', lib_name.replace('-', '_'))
    nbs_path = root / d.get('nbs_path', 'nbs')
    doc_path = root / d.get('doc_path', '_docs')
    return lib_path, lib_name, nbs_path, doc_path


def find_root(start: Path | None = None) -> Path:
    """The project root: TITO_ROOT if set, else the nearest folder at or above `start` (or the
    current directory) holding milestones/milestones.json, else this checkout."""
    env = os.environ.get('TITO_ROOT')
    if env:
        return Path(env).resolve()
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / DATA_FILE).is_file():
            return d
    return Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- cache keys

def _file_digest(path: Path) -> str:
    """Content hash of a small file, size and mtime of a big one; '<missing>' if it is gone."""
    try:
        st = os.stat(path)
        if st.st_size > _SMALL_FILE:
            return f'stat:{st.st_size}:{st.st_mtime_ns}'
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:24]
    except OSError:
        return '<missing>'


def toolchain_versions() -> str:
    """Python and the versions of the packages that run the tests."""
    from importlib import metadata
    parts = [sys.version.split()[0]]
    for name in ('numpy', 'nbdev', 'fastcore', 'execnb', 'pytest'):
        try:
            parts.append(f'{name}=={metadata.version(name)}')
        except metadata.PackageNotFoundError:
            parts.append(f'{name}==none')
    return ' '.join(parts)


def base_key(course: Course, module: Module, manifest_entry) -> str:
    """Hash of the inputs known before a run: notebook, protected tests, manifest entry, settings, versions."""
    h = hashlib.sha256(f'tito-cache-v{CACHE_VERSION}\0{toolchain_versions()}\0'.encode())
    for label, path in (('notebook', course.notebook_path(module)), ('protected', course.protected_tests(module)),
                        ('settings', course.root / 'settings.ini')):
        h.update(f'{label}\0{_file_digest(path)}\0'.encode())
    h.update(json.dumps(manifest_entry, sort_keys=True).encode())
    return h.hexdigest()


def _inputs_current(root: Path, inputs: dict) -> bool:
    return all(_file_digest(root / p if not os.path.isabs(p) else Path(p)) == d for p, d in inputs.items())


# --------------------------------------------------------------------------- running tests

def first_error_line(output: str) -> str:
    """The failing test's first error line from a notebook run's output, e.g.
    "cell #3 `test_eq(x, 2)`: AssertionError: ==: 1 2" (best effort, never raises)."""
    lines = output.splitlines()
    cell = next((m.group(1) for l in lines if (m := re.match(r'While Executing Cell #(\d+)', l.strip()))), None)
    stmt = None  # the statement in the failing cell: the first frame that comes from notebook code
    for i, l in enumerate(lines):
        if re.match(r'\s*File "<(ipython-input|cell)[^"]*>"', l):
            nxt = lines[i + 1] if i + 1 < len(lines) else ''
            if nxt.startswith(' ') and not nxt.strip().startswith('File '):
                stmt = nxt.strip()
            break
    exc_line = re.compile(r'^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Failure)(?::\s?.*)?$')
    exc_idx, in_tb = None, False
    for i, l in enumerate(lines):
        if l.startswith('Traceback (most recent call last)'):
            in_tb = True
            continue
        if in_tb and not l.startswith(' ') and exc_line.match(l.strip()):
            exc_idx = i
            break
    if exc_idx is None:
        exc_idx = next((i for i in range(len(lines) - 1, -1, -1) if exc_line.match(lines[i].strip())), None)
    if exc_idx is not None:
        msg = [lines[exc_idx].strip()]
        for l in lines[exc_idx + 1: exc_idx + 4]:  # multi-line messages (fastcore's test_eq)
            if not l.strip() or l.startswith('nbdev Tests Failed'):
                break
            msg.append(l.strip())
        error = ' '.join(msg)
    else:
        meaningful = [l.strip() for l in lines if l.strip() and not set(l.strip()) <= set('=-')
                      and not l.startswith('nbdev Tests Failed') and not l.startswith('\t')]
        error = meaningful[-1] if meaningful else 'the test run failed without output'
    where = ' '.join(x for x in (f'cell #{cell}' if cell else '', f'`{stmt}`' if stmt else '') if x)
    text = f'{where}: {error}' if where else error
    return text if len(text) <= 200 else text[:197] + '...'


def _test_env(parallel: bool) -> dict:
    env = dict(os.environ)
    if parallel:  # one process per core: a multi-threaded BLAS in each would oversubscribe the cores
        for var in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
            env.setdefault(var, '1')
    return env


@dataclass
class Proc:
    code: int | None   # None: timed out and killed
    output: str
    seconds: float


def run_process(cmd: list[str], cwd: Path, timeout: float, env: dict | None = None) -> Proc:
    """Run `cmd` in its own process group; on timeout kill the whole group (children included)."""
    start = time.monotonic()
    try:
        p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, start_new_session=True)
    except OSError as e:
        return Proc(127, f'OSError: could not run {cmd[0]}: {e}', 0.0)
    try:
        out, _ = p.communicate(timeout=timeout)
        code = p.returncode
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        out, _ = p.communicate()
        code = None
    return Proc(code, (out or b'').decode('utf-8', 'replace'), time.monotonic() - start)


def runner_command() -> list[str]:
    """TITO_NBRUN if set (a command line taking NOTEBOOK --report FILE), else milestones.nbrun."""
    env = os.environ.get('TITO_NBRUN')
    return shlex.split(env) if env else [sys.executable, '-m', 'milestones.nbrun']


def parse_junit(path: Path) -> dict:
    """{'tests', 'failed': [(name, message)], 'skipped': [(name, message)]} from a pytest --junitxml file."""
    out = {'tests': 0, 'failed': [], 'skipped': []}
    try:
        tree = ET.parse(path)
    except (OSError, ET.ParseError):
        return out
    for case in tree.iter('testcase'):
        out['tests'] += 1
        name = f'{case.get("classname", "")}::{case.get("name", "")}'.strip(':')
        for tag, bucket in (('failure', 'failed'), ('error', 'failed'), ('skipped', 'skipped')):
            el = case.find(tag)
            if el is not None:
                msg = (el.get('message') or (el.text or '').strip().splitlines()[-1:] or [''])
                out[bucket].append((name, msg if isinstance(msg, str) else msg[0]))
                break
    return out


@dataclass
class RunOutcome:
    ok: bool
    reason: str
    output: str
    seconds: float
    loaded: list          # package files (relative) and data files (absolute) both runs used
    cacheable: bool


def run_notebook(root: Path, nb: Path, timeout: float, env: dict | None = None, need_tests: bool = True) -> RunOutcome:
    """Run one notebook with the runner; ok only if every cell that should run ran (and, with
    `need_tests`, at least one test cell) without an error."""
    with tempfile.TemporaryDirectory(prefix='tito-nb-') as tmp:
        report = Path(tmp) / 'notebook.json'
        p = run_process(runner_command() + [str(nb), '--report', str(report), '--root', str(root)], root, timeout, env)
        if p.code is None:
            return RunOutcome(False, f'TimeoutError: the notebook did not finish within {timeout:.0f} s '
                              '(set TITO_TEST_TIMEOUT to change)', p.output[-OUTPUT_KEEP:], p.seconds, [], False)
        try:
            rep = json.loads(report.read_text(encoding='utf-8'))
        except (OSError, ValueError):
            return RunOutcome(False, f'the notebook runner stopped without a report (exit code {p.code}; killed?)',
                              p.output[-OUTPUT_KEEP:], p.seconds, [], False)
    used = sorted(set(rep.get('loaded', [])) | set(rep.get('data_files', [])))
    err = rep.get('error')
    if err:
        text = f'While Executing Cell #{err.get("cell")}:\n{err.get("traceback", "")}' if err.get('cell') \
            else err.get('traceback', '')
        return RunOutcome(False, first_error_line(text), (p.output + '\n' + text)[-OUTPUT_KEEP:], p.seconds, used, True)
    expected = rep['cells'] - rep['skipped']
    if rep['cells_run'] != expected or (need_tests and rep['test_cells_run'] == 0):
        why = (f'only {rep["cells_run"]} of its {expected} code cells ran' if rep['cells_run'] != expected
               else 'no test cell ran')
        return RunOutcome(False, f'{why}, so its tests did not really pass', p.output[-OUTPUT_KEEP:], p.seconds,
                          used, False)
    return RunOutcome(True, 'tests pass', '', p.seconds, used, True)


def test_module_now(course: Course, module: Module, parallel: bool = False) -> RunOutcome:
    """Run a module's notebook, then (if it passes) its protected tests; report what ran."""
    root, timeout = course.root, float(os.environ.get('TITO_TEST_TIMEOUT', DEFAULT_TIMEOUT))
    env = _test_env(parallel)
    nb_run = run_notebook(root, course.notebook_path(module), timeout, env)
    if not nb_run.ok:
        return nb_run
    used, seconds = set(nb_run.loaded), nb_run.seconds
    with tempfile.TemporaryDirectory(prefix='tito-run-') as tmp:
        prot = course.protected_tests(module)
        if not prot.is_file():
            return RunOutcome(False, f'its protected tests {prot.relative_to(root)} are missing', '', seconds,
                              sorted(used), True)
        junit, probe_out = Path(tmp) / 'junit.xml', Path(tmp) / 'probe.json'
        penv = dict(env, TITO_PROBE_OUT=str(probe_out), TITO_PROBE_ROOT=str(root))
        cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-p', 'milestones.probe',
               f'--junitxml={junit}', str(prot.relative_to(root))]
        q = run_process(cmd, root, timeout, penv)
        seconds += q.seconds
        if q.code is None:
            return RunOutcome(False, f'TimeoutError: the protected tests did not finish within {timeout:.0f} s',
                              q.output[-OUTPUT_KEEP:], seconds, sorted(used), False)
        try:
            probe = json.loads(probe_out.read_text(encoding='utf-8'))
            used |= set(probe.get('loaded', [])) | set(probe.get('data_files', []))
        except (OSError, ValueError):
            pass
        res = parse_junit(junit)
        name = prot.relative_to(root)
        if q.code == 0 and res['tests'] and not res['skipped']:
            return RunOutcome(True, 'tests pass', '', seconds, sorted(used), True)
        if res['failed']:
            first = res['failed'][0]
            reason = f'protected tests: {len(res["failed"])} of {res["tests"]} failed; first: {first[0].split("::")[-1]}: {first[1]}'
        elif res['skipped']:
            reason = f'protected tests: {len(res["skipped"])} skipped ({res["skipped"][0][1]}); every test must run'
        elif not res['tests']:
            reason = f'{name} collected no tests'
        else:
            reason = f'{name} failed (pytest exit code {q.code})'
        reason = reason if len(reason) <= 200 else reason[:197] + '...'
        return RunOutcome(False, reason, q.output[-OUTPUT_KEEP:], seconds, sorted(used), True)


# --------------------------------------------------------------------------- module states

@dataclass
class ModuleState:
    key: str
    state: str             # a key of states.MODULE_STATES
    reason: str
    cached: bool = False   # True when the result came from the cache
    output: str = ''       # output of a failing run (tail)
    seconds: float = 0.0
    tested_at: str = ''
    waiting_on: str = ''   # for 'locked': the key of the earlier module that must pass first
    deps: tuple = ()       # course modules whose package files the run imported

    @property
    def icon(self) -> str:
        return module_look(self.state).icon


@dataclass
class MilestoneState:
    milestone: Milestone
    modules: list          # ModuleState in course order
    unlocked: dict | None  # the stored unlock record, or None

    @property
    def passing(self) -> int:
        return sum(m.state == 'pass' for m in self.modules)

    @property
    def total(self) -> int:
        return len(self.modules)

    @property
    def percent(self) -> int:
        return round(100 * self.passing / self.total) if self.total else 100

    @property
    def complete(self) -> bool:
        return self.passing == self.total

    @property
    def state(self) -> str:
        if self.unlocked:
            return 'regressed' if any(m.state in BROKEN for m in self.modules) else 'unlocked'
        if self.complete:
            return 'ready'
        if any(m.state not in ('todo', 'absent') for m in self.modules):
            return 'in_progress'
        return 'not_started'

    @property
    def icon(self) -> str:
        return milestone_look(self.state).icon


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).astimezone()


class Engine:
    """Module and milestone state for the project at `root` (the folder holding milestones/)."""

    def __init__(self, root: Path | None = None, workers: int | None = None, progress=None):
        self.root = Path(root).resolve() if root else find_root()
        self.course = Course(self.root)
        self.state_dir = self.root / STATE_DIR
        self.cache_path = self.state_dir / CACHE_FILE
        self.unlocks_path = self.state_dir / UNLOCKS_FILE
        self.saved_dir = self.state_dir / SAVED_DIR
        self.workers = workers or os.cpu_count() or 1
        self.progress = progress  # callable(str) for "testing ..." lines, or None
        self.runs: list[str] = []  # module keys whose tests were actually run by this Engine
        self._warned: set[str] = set()

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warn(message)

    # ---- cache
    @staticmethod
    def _validate_cache(obj) -> None:
        if not isinstance(obj.get('modules'), dict):
            raise ValueError('"modules" must be an object')
        for k, v in obj['modules'].items():
            if not (isinstance(v, dict) and isinstance(v.get('key'), str) and isinstance(v.get('inputs'), dict)
                    and isinstance(v.get('ok'), bool)):
                raise ValueError(f'bad entry for module {k!r}')

    def _load_cache(self) -> dict:
        obj, corrupt = _load_state_file(self.cache_path, CACHE_VERSION, self._validate_cache)
        if corrupt:
            self._store_cache({})
        return obj['modules'] if obj else {}

    def _store_cache(self, updates: dict) -> None:
        """Merge `updates` into the cache file (another tito may have saved results meanwhile)."""
        try:
            current = _read_json_object(self.cache_path, CACHE_VERSION)
            self._validate_cache(current)
            modules = current['modules']
        except (OSError, ValueError, TypeError, AttributeError):
            modules = {}
        modules.update(updates)
        try:
            atomic_write_json(self.cache_path, {'version': CACHE_VERSION, 'modules': modules})
        except OSError as e:  # a read-only checkout still gets its status, just uncached
            self._warn_once('cache', f'cannot write {self.cache_path} ({e}); results will not be cached')

    @contextlib.contextmanager
    def _lock(self):
        """One tito at a time runs tests here; a second one waits, then reuses the first one's results."""
        try:
            import fcntl
            path = self.state_dir / LOCK_FILE
            path.parent.mkdir(parents=True, exist_ok=True)
            f = open(path, 'a+')
        except (ImportError, OSError) as e:
            self._warn_once('lock', f'cannot take the lock in {self.state_dir} ({e}); testing without it')
            yield
            return
        with f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                if self.progress:
                    self.progress('another tito is testing modules here; waiting for it to finish ...')
                fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---- module states
    def _static_state(self, m: Module, manifest) -> ModuleState | None:
        """The states that need no test run: absent, edited, todo (or an unreadable notebook)."""
        from .solutions import SolutionError, read_notebook, stubs_untouched, tests_edited
        nb = self.course.notebook_path(m)
        if not nb.is_file():
            return ModuleState(m.key, 'absent', f'notebook {nb.relative_to(self.root)} not present')
        try:
            edited = tests_edited(self.course, m, manifest)
            if edited:
                return ModuleState(m.key, 'edited', f'{edited}; restore the released tests (tito module reset '
                                   f'{m.key} keeps your version in {STATE_DIR}/{SAVED_DIR}/)')
            if stubs_untouched(read_notebook(nb)):
                return ModuleState(m.key, 'todo', f'not started: write the solution regions in {nb.relative_to(self.root)}')
        except (OSError, ValueError) as e:  # SolutionError and JSON errors are ValueErrors
            return ModuleState(m.key, 'fail', f'cannot read {nb.relative_to(self.root)}: {e}')
        return None

    def _deps(self, used) -> tuple:
        keys = []
        for p in used:
            path = Path(p)
            if not path.is_absolute() and path.parent == self.course.lib_path.relative_to(self.root):
                m = self.course.module_of_package(path.name)
                if m:
                    keys.append(m.key)
        return tuple(sorted(set(keys), key=lambda k: self.course.module_by_key[k].number))

    def module_states(self, keys=None, use_cache: bool = True, run: bool = True) -> dict[str, ModuleState]:
        """State of each module (all by default), testing in parallel those without a current cached result.
        With run=False nothing is tested: a module without a current cached result is 'untested'."""
        from .solutions import SolutionError, load_manifest, manifest_entry
        mods = [self.course.module_by_key[k] for k in keys] if keys is not None else self.course.modules
        try:
            manifest = load_manifest(self.root)
        except SolutionError as e:
            raise TitoError(str(e))
        results: dict[str, ModuleState] = {}
        pending: list[tuple[Module, str]] = []
        for m in mods:
            st = self._static_state(m, manifest)
            if st is not None:
                results[m.key] = st
            else:
                pending.append((m, base_key(self.course, m, manifest_entry(self.course, m))))

        def from_cache(cache):
            left = []
            for m, key in pending:
                entry = cache.get(m.key) if use_cache else None
                if entry and entry['key'] == key and _inputs_current(self.root, entry['inputs']):
                    results[m.key] = ModuleState(m.key, 'pass' if entry['ok'] else 'fail', entry.get('reason', ''),
                                                 cached=True, output=entry.get('output', ''),
                                                 seconds=entry.get('seconds', 0.0), tested_at=entry.get('tested_at', ''),
                                                 deps=tuple(entry.get('deps', ())))
                else:
                    left.append((m, key))
            return left

        pending = from_cache(self._load_cache())
        if pending and not run:
            for m, _ in pending:
                results[m.key] = ModuleState(m.key, 'untested', 'not tested since it last changed: run `make milestone-status`')
            pending = []
        if pending:
            with self._lock():
                pending = from_cache(self._load_cache()) if use_cache else pending  # another tito may have run them
                if pending:
                    self._run(pending, results)
        self._derive_locks(results)
        return {m.key: results[m.key] for m in mods}

    def _run(self, pending, results) -> None:
        from .solutions import manifest_entry
        if self.progress:
            names = ', '.join(m.stem for m, _ in pending)
            self.progress(f'testing {len(pending)} module(s) ({min(self.workers, len(pending))} in parallel): {names}')
        parallel = min(self.workers, len(pending)) > 1
        with ThreadPoolExecutor(max_workers=min(self.workers, len(pending))) as pool:
            futures = {pool.submit(test_module_now, self.course, m, parallel): (m, key) for m, key in pending}
            for fut in as_completed(futures):
                m, key = futures[fut]
                res = fut.result()
                self.runs.append(m.key)
                deps = self._deps(res.loaded)
                state = ModuleState(m.key, 'pass' if res.ok else 'fail', res.reason, output='' if res.ok else res.output,
                                    seconds=round(res.seconds, 2), tested_at=_now().isoformat(timespec='seconds'),
                                    deps=deps)
                results[m.key] = state
                try:
                    unchanged = base_key(self.course, m, manifest_entry(self.course, m)) == key
                except (OSError, ValueError):
                    unchanged = False
                lib_rel = self.course.lib_path.relative_to(self.root)
                inputs = {p: _file_digest(self.root / p if not os.path.isabs(p) else Path(p))
                          for p in res.loaded if Path(p).name != '_modidx.py' or Path(p).parent != lib_rel}
                if res.cacheable and unchanged:
                    self._store_cache({m.key: {'key': key, 'inputs': inputs, 'ok': res.ok, 'reason': res.reason,
                                               'output': state.output, 'seconds': state.seconds,
                                               'tested_at': state.tested_at, 'deps': list(deps)}})
                elif res.cacheable and self.progress:
                    self.progress(f'  {m.stem} changed while it was being tested: its result is not cached')
                if self.progress:
                    self.progress(f'  {state.icon} {m.stem} ({res.seconds:.1f} s)')

    def _derive_locks(self, results: dict[str, ModuleState]) -> None:
        """A failing module that imports an earlier module which does not pass waits on that one."""
        states = dict(results)
        for m in self.course.modules:
            st = results.get(m.key)
            if st is None or st.state != 'fail':
                continue
            blockers = []
            match = _STUB_MODULE.search(st.output or '') or _STUB_MODULE.search(st.reason)
            if match:
                blockers.append(int(match.group(1)))
            blockers += [self.course.module_by_key[k].number for k in st.deps]
            for number in sorted(set(blockers)):
                if number >= m.number or number > len(self.course.modules):
                    continue
                dep = self.course.modules[number - 1]
                dep_state = states.get(dep.key) or self.module_states([dep.key], run=False)[dep.key]
                states[dep.key] = dep_state
                if dep_state.state in BROKEN:
                    st.state, st.waiting_on = 'locked', dep.key
                    st.reason = f'waiting on {dep.label}: finish it first (then this one: {st.reason})'
                    break

    def test_module(self, key: str) -> ModuleState:
        """Test one module now, ignoring (and then refreshing) the cache."""
        return self.module_states([key], use_cache=False)[key]

    # ---- unlocks
    def unlocks(self) -> dict:
        """The stored unlock records. A bad record is dropped (the file is backed up first); the rest stay."""
        path = self.unlocks_path
        if not path.exists():
            return {}
        try:
            obj = _read_json_object(path, UNLOCKS_VERSION)
            records = obj['unlocked']
            if not isinstance(records, dict):
                raise ValueError('"unlocked" must be an object')
        except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as e:
            backup = keep_backup(path)
            warn(f'{path} is corrupt or unreadable ({type(e).__name__}: {e}); starting an empty record'
                 + (f'; the unreadable copy is kept at {backup}' if backup else ''))
            self._write_unlocks({})
            return {}
        good, bad = {}, []
        for k, v in records.items():
            try:
                if k not in self.course.milestone_by_key:
                    raise ValueError('unknown milestone')
                _dt.date.fromisoformat(v['date'])
                good[k] = v
            except (TypeError, KeyError, ValueError, AttributeError):
                bad.append(k)
        if bad:
            backup = keep_backup(path)
            warn(f'{path}: dropped the unreadable unlock record(s) {bad} and kept the others'
                 + (f'; the previous file is kept at {backup}' if backup else ''))
            self._write_unlocks(good)
        return good

    def _write_unlocks(self, unlocked: dict) -> None:
        try:
            atomic_write_json(self.unlocks_path, {'version': UNLOCKS_VERSION, 'unlocked': unlocked})
        except OSError as e:
            raise TitoError(f'cannot write {self.unlocks_path}: {e}')

    def record_unlock(self, key: str, when: _dt.datetime | None = None) -> dict:
        when = when or _now()
        unlocked = dict(self.unlocks())
        record = {'date': when.date().isoformat(), 'timestamp': when.isoformat(timespec='seconds')}
        unlocked[key] = record
        self._write_unlocks(unlocked)
        return record

    # ---- milestones
    def milestone_states(self, states: dict[str, ModuleState] | None = None) -> list[MilestoneState]:
        states = states or self.module_states()
        unlocked = self.unlocks()
        return [MilestoneState(ms, [states[k] for k in ms.modules], unlocked.get(ms.key))
                for ms in self.course.milestones]

    def next_locked(self, unlocked: dict | None = None) -> Milestone | None:
        unlocked = self.unlocks() if unlocked is None else unlocked
        return next((ms for ms in self.course.milestones if ms.key not in unlocked), None)

    def unlock_next(self, stream=None) -> 'UnlockOutcome':
        """The unlock policy: the next milestone in course order unlocks only when every earlier one is
        still whole, every one of its modules passes on a fresh test, and its capability test ran in full
        (nothing skipped) and passed. `stream` receives the capability test's live output."""
        unlocked = self.unlocks()
        ms = self.next_locked(unlocked)
        if ms is None:
            return UnlockOutcome(None, False, problems=[], all_done=True, unlocked=unlocked)
        earlier = [m for m in self.course.milestones if m.number < ms.number]
        earlier_keys = [k for m in earlier for k in m.modules]
        if self.progress:
            self.progress(f're-testing the {len(ms.modules)} modules of {ms.name} ...')
        states = self.module_states(earlier_keys) if earlier_keys else {}
        states.update(self.module_states(list(ms.modules), use_cache=False))
        self._derive_locks(states)
        problems = []
        for m in earlier:
            broken = [states[k] for k in m.modules if states[k].state in BROKEN]
            if broken:
                problems.append(f'{m.name} was unlocked but has regressed: '
                                + ', '.join(self.course.module_by_key[s.key].label for s in broken) + ' no longer pass')
        missing = [states[k] for k in ms.modules if states[k].state != 'pass']
        if problems or missing:
            return UnlockOutcome(ms, False, problems=problems, modules=states, missing=missing)
        if self.progress:
            self.progress(f'all {len(ms.modules)} modules of {ms.name} pass; running its capability test '
                          f'{ms.capability_test} (this can take minutes) ...')
        cap = run_capability_test(self.root, ms, stream=stream)
        if not cap.ok:
            return UnlockOutcome(ms, False, problems=[], modules=states, capability=cap)
        record = self.record_unlock(ms.key)
        return UnlockOutcome(ms, True, problems=[], modules=states, capability=cap, record=record)


@dataclass
class UnlockOutcome:
    milestone: Milestone | None
    unlocked_now: bool
    problems: list = field(default_factory=list)     # earlier milestones that regressed
    modules: dict = field(default_factory=dict)      # fresh module states
    missing: list = field(default_factory=list)      # ModuleStates of this milestone that do not pass
    capability: 'CapabilityResult | None' = None
    record: dict | None = None
    all_done: bool = False
    unlocked: dict | None = None


# --------------------------------------------------------------------------- capability tests

@dataclass
class CapabilityResult:
    ok: bool
    summary: str            # one line
    output: str
    missing: bool = False   # the test file is not written yet
    tests: int = 0
    failed: list = field(default_factory=list)    # (test, message)
    skipped: list = field(default_factory=list)   # (test, reason)


def run_capability_test(root: Path, milestone: Milestone, timeout: float | None = None, stream=None) -> CapabilityResult:
    """pytest on the milestone's capability test file. It passes only when tests ran, none failed and
    none was skipped. With `stream`, pytest's output is copied there as it comes (a heartbeat line is
    added when it is silent for a while)."""
    path = Path(root) / milestone.capability_test
    if not path.is_file():
        return CapabilityResult(False, f'capability test {milestone.capability_test} is not written yet', '', missing=True)
    with tempfile.TemporaryDirectory(prefix='tito-cap-') as tmp:
        junit = Path(tmp) / 'junit.xml'
        cmd = [sys.executable, '-m', 'pytest', '-v', '-s', '-p', 'no:cacheprovider', f'--junitxml={junit}',
               milestone.capability_test]
        out, code = _stream_process(cmd, Path(root), timeout, stream)
        if code is None:
            return CapabilityResult(False, f'capability test timed out after {timeout:.0f} s', out)
        res = parse_junit(junit)
    n, failed, skipped = res['tests'], res['failed'], res['skipped']
    common = dict(output=out, tests=n, failed=failed, skipped=skipped)
    if failed:
        return CapabilityResult(False, f'{len(failed)} of {n} capability tests failed: '
                                + '; '.join(f'{t.split("::")[-1]}: {m}' for t, m in failed[:3]), **common)
    if skipped:
        return CapabilityResult(False, f'{len(skipped)} of {n} capability tests were skipped, so the capability is '
                                'unproven: ' + '; '.join(f'{t.split("::")[-1]}: {m}' for t, m in skipped), **common)
    if n == 0 or code != 0:
        return CapabilityResult(False, f'{milestone.capability_test} ran no tests (pytest exit code {code})', **common)
    return CapabilityResult(True, f'all {n} capability tests ran and passed', **common)


def _stream_process(cmd, cwd: Path, timeout: float | None, stream) -> tuple[str, int | None]:
    """Run `cmd`, copying its output to `stream` as it arrives; returns (output, exit code or None on timeout)."""
    start = last = time.monotonic()
    p = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    chunks = []
    fd = p.stdout.fileno()
    while True:
        if timeout and time.monotonic() - start > timeout:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            return b''.join(chunks).decode('utf-8', 'replace'), None
        ready, _, _ = select.select([fd], [], [], 1.0)
        if ready:
            data = os.read(fd, 65536)
            if not data:
                break
            chunks.append(data)
            last = time.monotonic()
            if stream is not None:
                stream.write(data.decode('utf-8', 'replace'))
                stream.flush()
        elif stream is not None and time.monotonic() - last > 20:
            stream.write(f'\n... still running ({time.monotonic() - start:.0f} s so far)\n')
            stream.flush()
            last = time.monotonic()
    p.wait()
    return b''.join(chunks).decode('utf-8', 'replace'), p.returncode
