"""Issue 11, defects 8 and 10: where datasets are searched, checksums of files found on disk, file modes,
stale temp files, and download errors that say whose fault they are.

No network: downloads go through file:// URLs or a monkeypatched urlopen. The defect tests failed on
the code before the fix (run against a copy of the package from before the change).
"""
import gzip
import io
import os
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request

import numpy as np
import pytest

import tinytorch.dataloader as dl
from tinytorch.dataloader import (FashionMNIST, MNIST, ChecksumError, DatasetNotFoundError, download_any, download_file,
                                  file_md5, write_idx)
from tinytorch.layers import Linear
from tinytorch.training import save_checkpoint, load_checkpoint


def idx(array):
    code = {np.uint8: 0x08}[array.dtype.type]
    return struct.pack('>BBBB', 0, 0, code, array.ndim) + struct.pack(f'>{array.ndim}I', *array.shape) + array.tobytes()


def write_split(folder, n=5, seed=0, gz=True):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = {'train-images-idx3-ubyte': rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
              'train-labels-idx1-ubyte': rng.integers(0, 10, n, dtype=np.uint8)}
    for stem, a in arrays.items():
        (folder / (stem + ('.gz' if gz else ''))).write_bytes(gzip.compress(idx(a)) if gz else idx(a))
    return arrays


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    monkeypatch.delenv('TINYTORCH_DATA', raising=False)
    monkeypatch.setattr(dl, '_VERIFIED', {}, raising=False)
    return tmp_path


UMASK = os.umask(0o022); os.umask(UMASK)
NEW_MODE = 0o666 & ~UMASK


# ---------------------------------------------------------------- 8. root= and checksums of files found on disk

def test_mistyped_root_does_not_fall_back_to_another_copy(env, monkeypatch):
    write_split(env / 'elsewhere')
    monkeypatch.setenv('TINYTORCH_DATA', str(env / 'elsewhere'))
    monkeypatch.setattr(FashionMNIST, 'system_dirs', ())
    monkeypatch.setattr(FashionMNIST, 'resources', {})                    # hand-made files: nothing to verify
    monkeypatch.setattr(FashionMNIST, 'raw_sha256', {}, raising=False)
    assert len(FashionMNIST()) == 5                                       # found through the environment
    with pytest.raises(DatasetNotFoundError, match="only it was searched"):
        FashionMNIST(root=env / 'fashoin-mnist')                          # used to load the $TINYTORCH_DATA copy


def test_mistyped_root_does_not_fall_back_to_the_system_copy(env):
    if not FashionMNIST.system_dirs[0].is_dir():
        pytest.skip("Debian's copy is absent (sudo apt-get install dataset-fashion-mnist)")
    with pytest.raises(DatasetNotFoundError, match="only it was searched"):
        FashionMNIST(root=env / 'fashoin-mnist')                          # used to load /usr/share/datasets/...


def test_found_files_are_checksum_verified_once(env, monkeypatch):
    arrays = write_split(env / 'data')
    digests = {stem: __import__('hashlib').sha256(idx(a)).hexdigest() for stem, a in arrays.items()}
    monkeypatch.setattr(MNIST, 'raw_sha256', digests, raising=False)
    monkeypatch.setattr(MNIST, 'resources', {})
    monkeypatch.setattr(MNIST, 'system_dirs', ())
    calls = []
    real = dl.read_bytes
    monkeypatch.setattr(dl, 'read_bytes', lambda p: calls.append(str(p)) or real(p))
    np.testing.assert_array_equal(MNIST(root=env / 'data').labels, arrays['train-labels-idx1-ubyte'])
    first = len(calls)
    monkeypatch.setattr(dl, '_VERIFIED', {})                              # a new session: the verdict is on disk
    MNIST(root=env / 'data')
    assert first == 4 and len(calls) - first == 2                         # read to parse, not to hash again
    # a flipped bit that keeps the format valid is caught
    raw = bytearray(idx(arrays['train-images-idx3-ubyte'])); raw[200] ^= 1
    (env / 'data' / 'train-images-idx3-ubyte.gz').write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(ChecksumError, match="does not match the published MNIST file train-images-idx3-ubyte"):
        MNIST(root=env / 'data')
    assert len(MNIST(root=env / 'data', verify=False)) == 5


def test_debian_fashion_mnist_verifies():
    if not FashionMNIST.system_dirs[0].is_dir():
        pytest.skip("Debian's copy is absent (sudo apt-get install dataset-fashion-mnist)")
    ds = FashionMNIST(train=False)
    assert len(ds) == 10000
    assert all(dl._is_verified(p, [FashionMNIST.raw_sha256[p.name[:-3]]]) for p in ds.files)


# ---------------------------------------------------------------- 10. file modes

def test_dataset_files_and_checkpoints_get_the_umask_mode(tmp_path):
    p = write_idx(tmp_path / 'a.idx', np.zeros(3, np.uint8))
    assert stat.S_IMODE(p.stat().st_mode) == NEW_MODE                     # used to be 0600
    src = tmp_path / 'src.bin'; src.write_bytes(b'abc' * 100)
    got = download_file(src.as_uri(), tmp_path / 'd' / 'f.bin', file_md5(src), quiet=True)
    assert stat.S_IMODE(got.stat().st_mode) == NEW_MODE
    ck = save_checkpoint(tmp_path / 'm.npz', Linear(2, 2))
    assert stat.S_IMODE(os.stat(ck).st_mode) == NEW_MODE


def test_overwriting_a_checkpoint_keeps_its_mode(tmp_path):
    ck = save_checkpoint(tmp_path / 'm.npz', Linear(2, 2))
    for mode in (0o644, 0o640):
        os.chmod(ck, mode)
        save_checkpoint(ck, Linear(2, 2))
        assert stat.S_IMODE(os.stat(ck).st_mode) == mode                  # used to become 0600


# ---------------------------------------------------------------- 10. stale temp files of killed saves

def test_a_save_killed_by_sigkill_is_cleaned_up_by_the_next_save(tmp_path):
    ck = tmp_path / 'big.npz'
    code = textwrap.dedent(f"""
        import numpy as np, tinytorch.training as tr
        real = np.savez
        def slow(f, **arrays):
            f.write(b'partial'); f.flush(); print('writing', flush=True)
            import time; time.sleep(60)
        tr.np.savez = slow
        from tinytorch.layers import Linear
        tr.save_checkpoint({str(ck)!r}, Linear(2, 2))
    """)
    proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == 'writing'
    proc.kill(); proc.wait()                                              # SIGKILL: no cleanup can run
    stale = [p.name for p in tmp_path.iterdir() if p.name.startswith('.big.npz.')]
    assert len(stale) == 1
    save_checkpoint(ck, Linear(2, 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ['big.npz']     # used to keep the temp file forever
    load_checkpoint(ck, Linear(2, 2))


def test_a_temp_file_in_use_is_not_removed(tmp_path):                  # regression guard for the cleanup
    target = tmp_path / 'x.bin'
    fd, tmp = dl._atomic_temp(target, '.part')                            # a live writer holds its lock
    try:
        dl._write_atomic(target, [b'other writer'])
        assert os.path.exists(tmp)
    finally:
        os.close(fd); os.unlink(tmp)


# ---------------------------------------------------------------- 10. download errors

def test_permission_error_is_not_reported_as_connection_error(tmp_path, monkeypatch):
    src = tmp_path / 's.bin'; src.write_bytes(b'x' * 10)
    def refuse(*a, **k): raise PermissionError(13, 'Permission denied')
    monkeypatch.setattr(tempfile, 'mkstemp', refuse)
    with pytest.raises(PermissionError, match="cannot write f.bin into"):   # used to be ConnectionError
        download_any([src.as_uri()], tmp_path / 'ro' / 'f.bin', file_md5(src), quiet=True)


def test_permission_error_on_replace_is_not_a_connection_error(tmp_path, monkeypatch):
    src = tmp_path / 's.bin'; src.write_bytes(b'x' * 10)
    def refuse(*a, **k): raise PermissionError(13, 'Permission denied')
    monkeypatch.setattr(os, 'replace', refuse)
    with pytest.raises(PermissionError):
        download_any([src.as_uri()], tmp_path / 'f.bin', file_md5(src), quiet=True)
    monkeypatch.undo()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.f.bin')]


class Stalled(io.BytesIO):
    headers = {}
    def __enter__(self): return self
    def __exit__(self, *exc): return False
    def read(self, n=-1): raise TimeoutError('timed out')


def test_stalled_download_names_the_url(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, 'urlopen', lambda url, timeout=None: Stalled())
    with pytest.raises(TimeoutError, match="https://example.invalid/a.gz: the download stalled"):   # used to be bare
        download_file('https://example.invalid/a.gz', tmp_path / 'a.gz', '0' * 32, timeout=3, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_download_without_md5_fails_before_downloading(tmp_path, monkeypatch):
    opened = []
    monkeypatch.setattr(urllib.request, 'urlopen', lambda *a, **k: opened.append(a) or Stalled())
    for bad in (None, 'abc', 123):
        with pytest.raises(ValueError, match="md5 must be the published checksum"):   # used to fail after the download
            download_file('https://example.invalid/a.gz', tmp_path / 'a.gz', bad, quiet=True)
    assert opened == []
