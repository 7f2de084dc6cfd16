"""Progress engine: what state each TinyTorch module and milestone is in.

Reads the course definition (milestones/milestones.json), tests module notebooks with
`nbdev_test` (in parallel, cached under `.tito/` by content hash), and stores milestone
unlocks. Used by the `tito` CLI (milestones/tito.py), the progress page writer
(milestones/progress.py), `make test` (milestones/testrun.py) and the CLI tests.

A module's state is one of:
  pass   ✅  its notebook's tests pass under nbdev_test
  fail   🔄  the notebook exists but its tests fail (reason = first error line)
  absent ⏳  the notebook is not there yet

The cache key of a module is a sha256 of its notebook plus every `tinytorch/*.py` it imports,
followed transitively through the exported files, so editing a notebook (or re-exporting a
module it imports) re-tests exactly the notebooks it affects.
"""
from __future__ import annotations

import configparser
import datetime as _dt
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

DATA_FILE = Path('milestones') / 'milestones.json'
STATE_DIR = '.tito'
CACHE_FILE = 'module_cache.json'
UNLOCKS_FILE = 'unlocks.json'
CACHE_VERSION = 1
UNLOCKS_VERSION = 1
DEFAULT_TIMEOUT = 900  # seconds for one notebook's nbdev_test; override with TITO_TEST_TIMEOUT
OUTPUT_KEEP = 6000  # characters of a failing run's output kept in the cache

ICONS = {'pass': '✅', 'fail': '🔄', 'absent': '⏳', 'untested': '❔'}
MILESTONE_ICONS = {'unlocked': '✅', 'in_progress': '🔄', 'not_started': '⏳'}


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
            os.fsync(f.fileno())
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


def _load_state_file(path: Path, version: int, validate) -> tuple[dict | None, bool]:
    """Read a `.tito/` JSON state file -> (object or None, was_corrupt). Missing -> (None, False).
    Unreadable or malformed -> a warning, the bad copy kept beside it as `<name>.corrupt`, and
    (None, True): the caller rebuilds the file."""
    if not path.exists():
        return None, False
    try:
        obj = json.loads(path.read_text(encoding='utf-8'))
        if not isinstance(obj, dict) or obj.get('version') != version:
            raise ValueError(f'expected a JSON object with "version": {version}')
        validate(obj)
        return obj, False
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError) as e:
        backup = path.with_name(path.name + '.corrupt')
        try:
            os.replace(path, backup)
            kept = f'; the unreadable copy is kept at {backup}'
        except OSError:
            kept = ''
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


# --------------------------------------------------------------------------- import graph and hashing

_NB_IMPORT_RES = (r'^\s*from\s+{lib}\.(\w+)(?:\.\w+)*\s+import\b',
                  r'^\s*import\s+{lib}\.(\w+)',
                  r'^\s*from\s+{lib}\s+import\s+\(?([\w\s,]+)')
_REL_IMPORT_RES = (r'^\s*from\s+\.(\w+)(?:\.\w+)*\s+import\b',
                   r'^\s*from\s+\.\s+import\s+\(?([\w\s,]+)')


def _imported_names(source: str, lib_name: str, relative: bool) -> set[str]:
    pats = [p.format(lib=re.escape(lib_name)) for p in _NB_IMPORT_RES]
    if relative:
        pats += list(_REL_IMPORT_RES)
    names = set()
    for p in pats:
        for m in re.finditer(p, source, flags=re.MULTILINE):
            for part in m.group(1).split(','):
                word = part.strip().split()  # "tensor as T" -> tensor
                if word and word[0].isidentifier():
                    names.add(word[0])
    return names


def notebook_code(nb_text: str) -> str:
    """The code cells of a notebook joined together ('' if it is not valid notebook JSON)."""
    try:
        nb = json.loads(nb_text)
        cells = nb.get('cells', [])
        return '\n'.join(''.join(c['source']) if isinstance(c.get('source'), list) else str(c.get('source', ''))
                         for c in cells if isinstance(c, dict) and c.get('cell_type') == 'code')
    except (ValueError, AttributeError, TypeError, KeyError):
        return ''


def library_dependencies(nb_text: str, lib_path: Path, lib_name: str) -> list[Path]:
    """Every library file the notebook imports, directly or through the files it imports."""
    todo = sorted(_imported_names(notebook_code(nb_text), lib_name, relative=False))
    seen: dict[str, Path] = {}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = lib_path / f'{name}.py'
        seen[name] = path
        try:
            src = path.read_text(encoding='utf-8')
        except (OSError, UnicodeDecodeError):
            continue
        todo.extend(sorted(_imported_names(src, lib_name, relative=True) - set(seen)))
    return sorted(seen.values())


def module_hash(nb_path: Path, lib_path: Path, lib_name: str) -> str:
    """sha256 of the notebook and of every library file it imports (transitively)."""
    h = hashlib.sha256(f'tito-cache-v{CACHE_VERSION}\0{sys.version}\0'.encode())
    data = nb_path.read_bytes()
    h.update(b'notebook\0' + nb_path.name.encode() + b'\0' + data + b'\0')
    for dep in library_dependencies(data.decode('utf-8', 'replace'), lib_path, lib_name):
        h.update(b'dep\0' + dep.name.encode() + b'\0')
        try:
            h.update(dep.read_bytes())
        except OSError:
            h.update(b'<missing>')
        h.update(b'\0')
    return h.hexdigest()


# --------------------------------------------------------------------------- running nbdev_test

_EXC_LINE = re.compile(r'^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Failure)(?::\s?.*)?$')


def first_error_line(output: str) -> str:
    """The failing test's first error line from nbdev_test output, e.g.
    "cell #3 `test_eq(x, 2)`: AssertionError: ==: 1 2" (best effort, never raises)."""
    lines = output.splitlines()
    cell = next((m.group(1) for l in lines if (m := re.match(r'While Executing Cell #(\d+)', l.strip()))), None)
    # The statement in the failing cell is the first frame that comes from notebook code.
    stmt = None
    for i, l in enumerate(lines):
        if re.match(r'\s*File "<(ipython-input|cell)[^"]*>"', l):
            nxt = lines[i + 1] if i + 1 < len(lines) else ''
            if nxt.startswith(' ') and not nxt.strip().startswith('File '):
                stmt = nxt.strip()
            break
    # The exception line: the last "SomeError: message" line of the first traceback.
    exc_idx = None
    in_tb = False
    for i, l in enumerate(lines):
        if l.startswith('Traceback (most recent call last)'):
            in_tb = True
            continue
        if in_tb and not l.startswith(' ') and _EXC_LINE.match(l.strip()):
            exc_idx = i
            break
    if exc_idx is None:
        exc_idx = next((i for i in range(len(lines) - 1, -1, -1) if _EXC_LINE.match(lines[i].strip())), None)
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
        error = meaningful[-1] if meaningful else 'nbdev_test failed without output'
    where = ' '.join(x for x in (f'cell #{cell}' if cell else '', f'`{stmt}`' if stmt else '') if x)
    text = f'{where}: {error}' if where else error
    return text if len(text) <= 200 else text[:197] + '...'


def nbdev_test_command() -> list[str]:
    """TITO_NBDEV_TEST if set (a command line), else the nbdev_test next to this Python."""
    env = os.environ.get('TITO_NBDEV_TEST')
    if env:
        return shlex.split(env)
    exe = Path(sys.executable).parent / ('nbdev_test.exe' if os.name == 'nt' else 'nbdev_test')
    if exe.exists():
        return [str(exe)]
    import shutil
    found = shutil.which('nbdev_test')
    if found:
        return [found]
    raise TitoError(f'nbdev_test not found next to {sys.executable} or on PATH; run `make install`')


@dataclass
class RunResult:
    ok: bool
    output: str
    seconds: float


def run_nbdev_test(root: Path, nb_path: Path, timeout: float | None = None) -> RunResult:
    """Run nbdev_test on one notebook from the project root; never raises for a failing notebook."""
    timeout = timeout or float(os.environ.get('TITO_TEST_TIMEOUT', DEFAULT_TIMEOUT))
    cmd = nbdev_test_command() + ['--path', str(nb_path)]
    # Notebooks are tested one per core in parallel; a multi-threaded BLAS in each would oversubscribe the cores.
    env = dict(os.environ)
    for var in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS'): env.setdefault(var, '1')
    start = time.monotonic()
    try:
        p = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout, env=env,
                           encoding='utf-8', errors='replace', stdin=subprocess.DEVNULL)
        out = (p.stdout or '') + (p.stderr or '')
        ok = p.returncode == 0
    except subprocess.TimeoutExpired as e:
        out = f'TimeoutError: nbdev_test did not finish within {timeout:.0f} s (set TITO_TEST_TIMEOUT to change)\n'
        out += e.stdout.decode('utf-8', 'replace') if isinstance(e.stdout, bytes) else (e.stdout or '')
        ok = False
    except OSError as e:
        out, ok = f'OSError: could not run {cmd[0]}: {e}', False
    return RunResult(ok, out, time.monotonic() - start)


# --------------------------------------------------------------------------- module states

@dataclass
class ModuleState:
    key: str
    state: str             # 'pass' | 'fail' | 'absent'
    reason: str
    cached: bool = False   # True when the result came from .tito/module_cache.json
    output: str = ''       # nbdev_test output of a failing run (tail)
    seconds: float = 0.0
    tested_at: str = ''

    @property
    def icon(self) -> str:
        return ICONS[self.state]


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
            return 'unlocked'
        if any(m.state != 'absent' for m in self.modules):
            return 'in_progress'
        return 'not_started'

    @property
    def icon(self) -> str:
        return MILESTONE_ICONS[self.state]


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
        self.workers = workers or os.cpu_count() or 1
        self.progress = progress  # callable(str) for "testing ..." lines, or None
        self.runs: list[str] = []  # module keys whose notebooks were actually run (this Engine)
        self._cache: dict | None = None

    # ---- cache
    @staticmethod
    def _validate_cache(obj) -> None:
        if not isinstance(obj.get('modules'), dict):
            raise ValueError('"modules" must be an object')
        for k, v in obj['modules'].items():
            if not (isinstance(v, dict) and isinstance(v.get('hash'), str) and v.get('state') in ('pass', 'fail')):
                raise ValueError(f'bad entry for module {k!r}')

    def _load_cache(self) -> dict:
        if self._cache is None:
            obj, corrupt = _load_state_file(self.cache_path, CACHE_VERSION, self._validate_cache)
            self._cache = obj or {'version': CACHE_VERSION, 'modules': {}}
            self._cache_dirty = corrupt  # rebuild a corrupt file even if nothing needs testing
            self._updated: set[str] = set()
        return self._cache

    def _save_cache(self) -> None:
        # Another tito may have saved results meanwhile: keep its entries, overlay ours.
        try:
            disk = json.loads(self.cache_path.read_text(encoding='utf-8'))
            self._validate_cache(disk)
            if disk.get('version') == CACHE_VERSION:
                merged = dict(disk['modules'])
                merged.update({k: self._cache['modules'][k] for k in self._updated})
                self._cache['modules'] = merged
        except (OSError, ValueError, TypeError, AttributeError):
            pass
        try:
            atomic_write_json(self.cache_path, self._cache)
        except OSError as e:  # a read-only checkout still gets its status, just uncached
            if not getattr(self, '_save_warned', False):
                warn(f'cannot write {self.cache_path} ({e}); results will not be cached')
                self._save_warned = True
        self._cache_dirty = False

    # ---- module states
    def module_states(self, keys=None, use_cache: bool = True, run: bool = True) -> dict[str, ModuleState]:
        """State of each module (all by default), testing in parallel those whose cache is stale.
        With run=False nothing is tested: a module without a current cached result is 'untested'."""
        mods = [self.course.module_by_key[k] for k in keys] if keys is not None else self.course.modules
        cache = self._load_cache()
        results: dict[str, ModuleState] = {}
        to_run: list[tuple[Module, str]] = []
        for m in mods:
            nb = self.course.notebook_path(m)
            if not nb.is_file():
                results[m.key] = ModuleState(m.key, 'absent', f'notebook {nb.relative_to(self.root)} not present')
                continue
            try:
                h = module_hash(nb, self.course.lib_path, self.course.lib_name)
            except OSError as e:
                results[m.key] = ModuleState(m.key, 'fail', f'cannot read {nb.relative_to(self.root)}: {e}')
                continue
            entry = cache['modules'].get(m.key)
            if use_cache and entry and entry.get('hash') == h:
                results[m.key] = ModuleState(m.key, entry['state'], entry.get('reason', ''), cached=True,
                                             output=entry.get('output', ''), seconds=entry.get('seconds', 0.0),
                                             tested_at=entry.get('tested_at', ''))
            elif run:
                to_run.append((m, h))
            else:
                results[m.key] = ModuleState(m.key, 'untested', 'not tested since it last changed: run `make milestone-status`')
        if to_run:
            if self.progress:
                names = ', '.join(m.stem for m, _ in to_run)
                self.progress(f'testing {len(to_run)} module notebook(s) with nbdev_test '
                              f'({min(self.workers, len(to_run))} in parallel): {names}')
            with ThreadPoolExecutor(max_workers=min(self.workers, len(to_run))) as pool:
                futures = {pool.submit(run_nbdev_test, self.root, self.course.notebook_path(m)): (m, h)
                           for m, h in to_run}
                for fut in as_completed(futures):
                    m, h = futures[fut]
                    res = fut.result()
                    self.runs.append(m.key)
                    state = ModuleState(m.key, 'pass' if res.ok else 'fail',
                                        'tests pass' if res.ok else first_error_line(res.output),
                                        cached=False, output='' if res.ok else res.output[-OUTPUT_KEEP:],
                                        seconds=round(res.seconds, 2), tested_at=_now().isoformat(timespec='seconds'))
                    results[m.key] = state
                    self._updated.add(m.key)
                    cache['modules'][m.key] = {'hash': h, 'state': state.state, 'reason': state.reason,
                                               'output': state.output, 'seconds': state.seconds,
                                               'tested_at': state.tested_at}
                    self._save_cache()  # after each result, so an interrupt keeps finished work
                    if self.progress:
                        self.progress(f'  {state.icon} {m.stem} ({res.seconds:.1f} s)')
        elif self._cache_dirty:
            self._save_cache()
        return {m.key: results[m.key] for m in mods}

    def test_module(self, key: str) -> ModuleState:
        """Test one module now, ignoring (and then refreshing) the cache."""
        return self.module_states([key], use_cache=False)[key]

    # ---- unlocks
    def unlocks(self) -> dict:
        def validate(obj):
            if not isinstance(obj.get('unlocked'), dict):
                raise ValueError('"unlocked" must be an object')
            for k, v in obj['unlocked'].items():
                if not (isinstance(v, dict) and isinstance(v.get('date'), str)):
                    raise ValueError(f'bad unlock record for {k!r}')
                _dt.date.fromisoformat(v['date'])
        obj, corrupt = _load_state_file(self.unlocks_path, UNLOCKS_VERSION, validate)
        if corrupt:
            atomic_write_json(self.unlocks_path, {'version': UNLOCKS_VERSION, 'unlocked': {}})
        return obj['unlocked'] if obj else {}

    def record_unlock(self, key: str, when: _dt.datetime | None = None) -> dict:
        when = when or _now()
        unlocked = dict(self.unlocks())
        record = {'date': when.date().isoformat(), 'timestamp': when.isoformat(timespec='seconds')}
        unlocked[key] = record
        try:
            atomic_write_json(self.unlocks_path, {'version': UNLOCKS_VERSION, 'unlocked': unlocked})
        except OSError as e:
            raise TitoError(f'cannot record the unlock in {self.unlocks_path}: {e}')
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


# --------------------------------------------------------------------------- capability tests

@dataclass
class CapabilityResult:
    ok: bool
    summary: str   # one line
    output: str
    missing: bool = False


def run_capability_test(root: Path, milestone: Milestone, timeout: float | None = None) -> CapabilityResult:
    """pytest on the milestone's capability test file, with this Python."""
    path = Path(root) / milestone.capability_test
    if not path.is_file():
        return CapabilityResult(False, f'capability test {milestone.capability_test} not written yet', '', missing=True)
    cmd = [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', milestone.capability_test]
    try:
        p = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout,
                           encoding='utf-8', errors='replace', stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return CapabilityResult(False, f'capability test timed out after {timeout:.0f} s', '')
    out = (p.stdout or '') + (p.stderr or '')
    last = next((l.strip().strip('=').strip() for l in reversed(out.splitlines()) if l.strip()), '')
    if p.returncode == 0:
        return CapabilityResult(True, last or 'passed', out)
    if p.returncode == 5:
        return CapabilityResult(False, f'{milestone.capability_test} contains no tests', out)
    failed = [l.split(' - ', 1)[-1] if ' - ' in l else l
              for l in out.splitlines() if l.startswith(('FAILED ', 'ERROR '))]
    detail = f' (first failure: {failed[0][:160]})' if failed else ''
    return CapabilityResult(False, f'{last}{detail}', out)
