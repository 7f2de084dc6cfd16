"""File formats, downloads, search order, loader and transforms of tinytorch.dataloader (module 08).

Every data file here is written by the test itself, byte by byte in the published formats (IDX for
MNIST/Fashion-MNIST, CIFAR-10 binary records, tar.gz archives), so no network and no real dataset is
needed. Downloads go through file:// URLs or a monkeypatched urlopen. The one real-data check loads
Fashion-MNIST from Debian's dataset-fashion-mnist package and is skipped, with the way to get it,
when the package is absent.
"""
import gzip
import io
import os
import struct
import tarfile
import time
import urllib.request

import numpy as np
import pytest

import tinytorch.dataloader as dl
from tinytorch.dataloader import (CIFAR10, ChecksumError, Compose, DataFormatError, DataLoader, DatasetNotFoundError,
                                  Digits, FashionMNIST, MNIST, Normalize, RandomCrop, RandomHorizontalFlip,
                                  TensorDataset, crop_at, download_file, file_md5, read_cifar_bin, read_idx)


# ---------------------------------------------------------------- helpers writing the formats by hand

def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding per the format description: 0, 0, type code, ndim, big-endian uint32 dims, big-endian data."""
    code = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}[array.dtype.type]
    header = struct.pack('>BBBB', 0, 0, code, array.ndim) + struct.pack(f'>{array.ndim}I', *array.shape)
    return header + array.astype(array.dtype.newbyteorder('>')).tobytes()


def write_split(folder, split, n, gz, seed=0):
    """MNIST-layout files for one split (train / t10k); returns (images, labels)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    for stem, arr in ((f'{split}-images-idx3-ubyte', images), (f'{split}-labels-idx1-ubyte', labels)):
        data = idx_bytes(arr)
        (folder / (stem + '.gz' if gz else stem)).write_bytes(gzip.compress(data) if gz else data)
    return images, labels


def cifar_records(n, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return labels, pixels, b''.join(bytes([lab]) + row.tobytes() for lab, row in zip(labels, pixels))


def cifar_archive(path, records=2, extra=()):
    """A miniature cifar-10-binary.tar.gz; returns {file name: (images, labels)}."""
    members, arrays = list(extra), {}
    names = [f'data_batch_{i}.bin' for i in range(1, 6)] + ['test_batch.bin']
    for seed, name in enumerate(names):
        labels, pixels, data = cifar_records(records, seed)
        members.append((f'cifar-10-batches-bin/{name}', data))
        arrays[name] = (pixels.reshape(records, 3, 32, 32), labels)
    with tarfile.open(path, 'w:gz') as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return arrays


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No TINYTORCH_DATA, a private empty user cache, and no system folders. The hand-written files are
    not the published ones, so the published checksums are switched off too (tests that download set their own)."""
    monkeypatch.delenv('TINYTORCH_DATA', raising=False)
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    for cls in (FashionMNIST, MNIST):
        monkeypatch.setattr(cls, 'system_dirs', ())
        monkeypatch.setattr(cls, 'resources', {})
        monkeypatch.setattr(cls, 'raw_sha256', {})
    return tmp_path


# ---------------------------------------------------------------- IDX

@pytest.mark.parametrize('gz', [False, True])
def test_idx_reads_hand_written_file(tmp_path, gz):
    images = np.random.default_rng(1).integers(0, 256, (7, 28, 28), dtype=np.uint8)
    data = idx_bytes(images)
    assert int.from_bytes(data[:4], 'big') == 2051
    path = tmp_path / ('img.gz' if gz else 'img')
    path.write_bytes(gzip.compress(data) if gz else data)
    np.testing.assert_array_equal(read_idx(path, magic=2051), images)


@pytest.mark.parametrize('dtype', [np.int16, np.int32, np.float32, np.float64, np.int8])
def test_idx_multibyte_types_are_big_endian(tmp_path, dtype):
    arr = (np.arange(12).reshape(3, 4) - 5).astype(dtype)
    (tmp_path / 'a.idx').write_bytes(idx_bytes(arr))
    out = read_idx(tmp_path / 'a.idx')
    np.testing.assert_array_equal(out, arr)
    assert out.dtype == dtype


@pytest.mark.parametrize('gz', [False, True])
def test_idx_truncated_file_is_an_error(tmp_path, gz):
    data = idx_bytes(np.zeros((10, 28, 28), np.uint8))[:-100]
    path = tmp_path / 'cut'
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataFormatError, match=r"cut: truncated: the IDX header says 10x28x28 uint8 = 7840 data bytes, but 7740"):
        read_idx(path)


def test_idx_truncated_gzip_stream_is_an_error(tmp_path):
    path = tmp_path / 'half.gz'
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((10, 28, 28), np.uint8)))[:-20])
    with pytest.raises(DataFormatError, match="half.gz: the gzip data is truncated or corrupted"):
        read_idx(path)


def test_idx_bad_magic_and_wrong_kind(tmp_path):
    (tmp_path / 'page').write_bytes(b'<!DOCTYPE html><html>...</html>')
    with pytest.raises(DataFormatError, match="page: not an IDX file"):
        read_idx(tmp_path / 'page')
    (tmp_path / 'labels').write_bytes(idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(DataFormatError, match=r"expected IDX magic number 2051 \(uint8, 3 dims\), got 2049 \(uint8, 1 dims\)"):
        read_idx(tmp_path / 'labels', magic=2051)
    (tmp_path / 'tiny').write_bytes(b'\x00\x00')
    with pytest.raises(DataFormatError, match="too short"):
        read_idx(tmp_path / 'tiny')


def test_idx_trailing_bytes_are_an_error(tmp_path):
    (tmp_path / 'long').write_bytes(idx_bytes(np.zeros(5, np.uint8)) + b'junk')
    with pytest.raises(DataFormatError, match="too long"):
        read_idx(tmp_path / 'long')


def test_write_idx_round_trip(tmp_path):
    arr = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    for name in ('a.idx', 'a.idx.gz'):
        path = dl.write_idx(tmp_path / name, arr)
        np.testing.assert_array_equal(read_idx(path), arr)
    assert (tmp_path / 'a.idx').read_bytes() == idx_bytes(arr)


# ---------------------------------------------------------------- MNIST-family datasets and search order

@pytest.mark.parametrize('gz', [False, True])
def test_fashion_mnist_from_root(clean_env, gz):
    images, labels = write_split(clean_env / 'data', 'train', 6, gz)
    test_images, test_labels = write_split(clean_env / 'data', 't10k', 3, gz, seed=1)
    train, test = FashionMNIST(root=clean_env / 'data'), FashionMNIST(root=clean_env / 'data', train=False)
    assert (len(train), len(test)) == (6, 3)
    assert train.images.shape == (6, 1, 28, 28) and train.images.dtype == np.uint8
    np.testing.assert_array_equal(train.images[:, 0], images)
    np.testing.assert_array_equal(test.labels, test_labels)
    x, y = train.get_batch(np.array([4, 1]))
    assert x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x[:, 0], images[[4, 1]] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels[[4, 1]])


def test_search_order_root_env_cache_system(clean_env, monkeypatch):
    places = {name: clean_env / name for name in ('root', 'env', 'cache-base', 'system')}
    labels = {}
    for seed, (name, folder) in enumerate(places.items()):
        target = folder / 'tinytorch' / 'mnist' if name == 'cache-base' else folder
        labels[name] = write_split(target, 'train', 5, gz=True, seed=seed + 10)[1]
    monkeypatch.setenv('TINYTORCH_DATA', str(places['env']))
    monkeypatch.setenv('XDG_CACHE_HOME', str(places['cache-base']))
    monkeypatch.setattr(MNIST, 'system_dirs', (places['system'],))
    np.testing.assert_array_equal(MNIST(root=places['root']).labels, labels['root'])
    np.testing.assert_array_equal(MNIST().labels, labels['env'])
    monkeypatch.delenv('TINYTORCH_DATA')
    np.testing.assert_array_equal(MNIST().labels, labels['cache-base'])
    monkeypatch.setenv('XDG_CACHE_HOME', str(clean_env / 'empty'))
    np.testing.assert_array_equal(MNIST().labels, labels['system'])


def test_named_subfolder_of_root_is_searched(clean_env):
    labels = write_split(clean_env / 'data' / 'fashion-mnist', 'train', 3, gz=False)[1]
    np.testing.assert_array_equal(FashionMNIST(root=clean_env / 'data').labels, labels)


def test_not_found_lists_every_place_and_the_way_to_get_it(clean_env, monkeypatch):
    monkeypatch.setenv('TINYTORCH_DATA', str(clean_env / 'env'))
    monkeypatch.setattr(FashionMNIST, 'system_dirs', (clean_env / 'debian',))
    with pytest.raises(DatasetNotFoundError) as info:
        FashionMNIST()
    msg = str(info.value)
    for expected in (f"1. $TINYTORCH_DATA: {clean_env / 'env'}", f"2. $TINYTORCH_DATA: {clean_env / 'env' / 'fashion-mnist'}",
                     f"3. user cache: {clean_env / 'cache' / 'tinytorch' / 'fashion-mnist'}",
                     f"4. system: {clean_env / 'debian'}", "apt-get install dataset-fashion-mnist", "download=True"):
        assert expected in msg, (expected, msg)
    with pytest.raises(DatasetNotFoundError) as info:          # a given root is the only place searched
        FashionMNIST(root=clean_env / 'mine')
    msg = str(info.value)
    for expected in (f"1. root: {clean_env / 'mine'} (no such folder)", f"2. root: {clean_env / 'mine' / 'fashion-mnist'}",
                     "only it was searched", "download=True"):
        assert expected in msg, (expected, msg)
    assert '$TINYTORCH_DATA' not in msg.split('only it was searched')[0]


def test_debian_location_is_the_last_place_searched():
    assert FashionMNIST.system_dirs == (dl.DEBIAN_FASHION_MNIST,)
    assert str(dl.DEBIAN_FASHION_MNIST) == '/usr/share/datasets/fashion-mnist'


def test_mismatched_counts_and_bad_labels(clean_env):
    folder = clean_env / 'd'
    write_split(folder, 'train', 4, gz=False)
    (folder / 'train-labels-idx1-ubyte').write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DataFormatError, match="holds 4 images but .* holds 3 labels"):
        MNIST(root=folder)
    (folder / 'train-labels-idx1-ubyte').write_bytes(idx_bytes(np.array([0, 1, 12, 3], np.uint8)))
    with pytest.raises(DataFormatError, match="label 12 is not one of the 10 classes"):
        MNIST(root=folder)


def test_truncated_dataset_file_is_not_silently_misread(clean_env):
    folder = clean_env / 'd'
    write_split(folder, 'train', 4, gz=True)
    path = folder / 'train-images-idx3-ubyte.gz'
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataFormatError, match="train-images-idx3-ubyte.gz"):
        FashionMNIST(root=folder)


# ---------------------------------------------------------------- downloads

def publish_split(tmp_path, monkeypatch, cls, n=4):
    """Put gzipped files in a folder served as file:// and point `cls` at it with the right checksums."""
    pub = tmp_path / 'published'
    write_split(pub, 'train', n, gz=True)
    write_split(pub, 't10k', 2, gz=True, seed=1)
    monkeypatch.setattr(cls, 'mirrors', [pub.as_uri() + '/'])
    monkeypatch.setattr(cls, 'resources', {p.name: file_md5(p) for p in pub.iterdir()})
    return pub


def test_download_lands_in_cache_and_is_found_next_time(clean_env, monkeypatch):
    pub = publish_split(clean_env, monkeypatch, FashionMNIST)
    ds = FashionMNIST(download=True)
    cache = clean_env / 'cache' / 'tinytorch' / 'fashion-mnist'
    assert sorted(p.name for p in cache.iterdir()) == ['train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz']
    assert (cache / 'train-images-idx3-ubyte.gz').read_bytes() == (pub / 'train-images-idx3-ubyte.gz').read_bytes()
    assert len(ds) == 4
    monkeypatch.setattr(FashionMNIST, 'mirrors', ['file:///does/not/exist/'])
    np.testing.assert_array_equal(FashionMNIST(download=True).labels, ds.labels)


def test_download_goes_to_root_when_given(clean_env, monkeypatch):
    publish_split(clean_env, monkeypatch, MNIST)
    MNIST(root=clean_env / 'mine', train=False, download=True)
    assert sorted(p.name for p in (clean_env / 'mine').iterdir()) == ['t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz']


def test_wrong_checksum_leaves_no_file(clean_env, monkeypatch):
    publish_split(clean_env, monkeypatch, FashionMNIST)
    monkeypatch.setattr(FashionMNIST, 'resources', {k: 'f' * 32 for k in FashionMNIST.resources})
    with pytest.raises(ConnectionError, match=f"checksum mismatch for train-images-idx3-ubyte.gz: expected md5 {'f' * 32}"):
        FashionMNIST(download=True)
    cache = clean_env / 'cache' / 'tinytorch' / 'fashion-mnist'
    assert list(cache.iterdir()) == []


def test_download_file_checksum_error_and_atomic_landing(tmp_path):
    src = tmp_path / 'src.bin'
    src.write_bytes(os.urandom(3 * (1 << 20) + 17))                 # several read chunks
    dest = tmp_path / 'out' / 'file.bin'
    with pytest.raises(ChecksumError, match="nothing was saved"):
        download_file(src.as_uri(), dest, '0' * 32, quiet=True)
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []
    download_file(src.as_uri(), dest, file_md5(src), quiet=True)
    assert dest.read_bytes() == src.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ['file.bin']


class _ShortResponse(io.BytesIO):
    """A server that announces more bytes than it sends (a dropped connection)."""
    headers = {'Content-Length': '1000'}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_download_truncated_by_the_server_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(urllib.request, 'urlopen', lambda url, timeout=None: _ShortResponse(b'x' * 600))
    with pytest.raises(DataFormatError, match="truncated: got 600 of 1000 bytes"):
        download_file('https://example.invalid/f.gz', tmp_path / 'f.gz', '0' * 32, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_download_that_is_interrupted_leaves_no_file(tmp_path, monkeypatch):
    class Broken(_ShortResponse):
        def read(self, n=-1):
            raise ConnectionResetError("connection reset by peer")
    monkeypatch.setattr(urllib.request, 'urlopen', lambda url, timeout=None: Broken(b''))
    with pytest.raises(ConnectionResetError):
        download_file('https://example.invalid/f.gz', tmp_path / 'f.gz', '0' * 32, quiet=True)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- CIFAR-10

def test_cifar_reader_on_hand_written_records(tmp_path):
    labels, pixels, data = cifar_records(5)
    (tmp_path / 'b.bin').write_bytes(data)
    images, labs = read_cifar_bin(tmp_path / 'b.bin', expected_records=5)
    assert images.shape == (5, 3, 32, 32) and labs.dtype == np.int64
    np.testing.assert_array_equal(labs, labels)
    # channel planes: bytes 1..1024 of a record are red, row-major
    np.testing.assert_array_equal(images[2, 0].ravel(), np.frombuffer(data, np.uint8)[2 * 3073 + 1: 2 * 3073 + 1025])
    np.testing.assert_array_equal(images[2, 2, 31, 31], data[2 * 3073 + 3072])


def test_cifar_reader_refuses_damaged_files(tmp_path):
    _, _, data = cifar_records(4)
    (tmp_path / 'cut.bin').write_bytes(data[:-1])
    with pytest.raises(DataFormatError, match="cut.bin: 12291 bytes is not a whole number of CIFAR-10 records"):
        read_cifar_bin(tmp_path / 'cut.bin')
    (tmp_path / 'few.bin').write_bytes(data[:3073 * 3])
    with pytest.raises(DataFormatError, match="expected 10000 CIFAR-10 records .*found 3"):
        read_cifar_bin(tmp_path / 'few.bin', expected_records=10000)
    (tmp_path / 'empty.bin').write_bytes(b'')
    with pytest.raises(DataFormatError, match="0 bytes"):
        read_cifar_bin(tmp_path / 'empty.bin')
    (tmp_path / 'label.bin').write_bytes(bytes([10]) + bytes(3072))
    with pytest.raises(DataFormatError, match="label byte 10"):
        read_cifar_bin(tmp_path / 'label.bin')


@pytest.fixture
def tiny_cifar(tmp_path, monkeypatch):
    archive = tmp_path / 'pub' / 'cifar-10-binary.tar.gz'
    archive.parent.mkdir()
    arrays = cifar_archive(archive, records=2, extra=[('../outside.txt', b'x'), ('/abs.txt', b'x'),
                                                      ('cifar-10-batches-bin/../../up.txt', b'x')])
    monkeypatch.setattr(CIFAR10, 'url', archive.as_uri())
    monkeypatch.setattr(CIFAR10, 'md5', file_md5(archive))
    monkeypatch.setattr(CIFAR10, 'records_per_file', 2)
    return arrays


def test_cifar_download_extract_and_load(clean_env, tiny_cifar):
    with pytest.raises(DatasetNotFoundError, match="CIFAR10\\(download=True\\)"):
        CIFAR10()
    train = CIFAR10(download=True)
    test = CIFAR10(train=False)
    assert (len(train), len(test)) == (10, 2)
    np.testing.assert_array_equal(train.images[4:6], tiny_cifar['data_batch_3.bin'][0])
    np.testing.assert_array_equal(test.labels, tiny_cifar['test_batch.bin'][1])
    home = clean_env / 'cache' / 'tinytorch' / 'cifar-10'
    assert sorted(p.name for p in home.iterdir()) == ['cifar-10-batches-bin', 'cifar-10-binary.tar.gz']
    assert sorted(p.name for p in (home / 'cifar-10-batches-bin').iterdir()) == \
        sorted([f'data_batch_{i}.bin' for i in range(1, 6)] + ['test_batch.bin'])
    for name in ('outside.txt', 'abs.txt', 'up.txt'):                 # hostile members never written
        assert not list(clean_env.rglob(name)) and not os.path.exists('/' + name)
    x, y = next(iter(DataLoader(train, batch_size=4)))
    assert x.shape == (4, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64


def test_cifar_archive_found_on_disk_is_checksummed(clean_env, tiny_cifar, monkeypatch):
    root = clean_env / 'r'
    root.mkdir()
    (root / 'cifar-10-binary.tar.gz').write_bytes(b'an html error page')
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        CIFAR10(root=root)


def test_cifar_truncated_archive_and_links(tmp_path):
    archive = tmp_path / 'a.tar.gz'
    cifar_archive(archive, records=50)
    cut = tmp_path / 'cut.tar.gz'
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataFormatError, match="truncated or corrupted"):
        dl.extract_members(cut, tmp_path / 'o1', 'cifar-10-batches-bin', ['test_batch.bin'])
    with tarfile.open(tmp_path / 'link.tar', 'w') as tar:
        info = tarfile.TarInfo('cifar-10-batches-bin/test_batch.bin')
        info.type, info.linkname = tarfile.SYMTYPE, '/etc/passwd'
        tar.addfile(info)
    with pytest.raises(DataFormatError, match="should be a regular file"):
        dl.extract_members(tmp_path / 'link.tar', tmp_path / 'o2', 'cifar-10-batches-bin', ['test_batch.bin'])
    assert not (tmp_path / 'o2' / 'test_batch.bin').exists()


# ---------------------------------------------------------------- loader

def test_loader_shapes_dtypes_and_len():
    x = np.random.default_rng(0).standard_normal((103, 3, 4, 4))          # float64 in -> float32 out
    y = np.arange(103) % 10
    for drop_last, n_batches, last in ((False, 4, 7), (True, 3, 32)):
        loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, drop_last=drop_last, seed=0)
        batches = list(loader)
        assert len(loader) == len(batches) == n_batches
        assert batches[-1][0].shape == (last, 3, 4, 4)
        assert all(xb.dtype == np.float32 and yb.dtype == np.int64 for xb, yb in batches)


def test_loader_reproducible_from_seed_and_reshuffles_each_epoch():
    ds = TensorDataset(np.arange(50), np.zeros(50))
    def epochs(seed, n=3):
        loader = DataLoader(ds, batch_size=8, shuffle=True, seed=seed)
        return [np.concatenate([b[0].numpy() for b in loader]) for _ in range(n)]
    a, b, c = epochs(11), epochs(11), epochs(12)
    for ea, eb in zip(a, b):
        np.testing.assert_array_equal(ea, eb)
        np.testing.assert_array_equal(np.sort(ea), np.arange(50))
    assert not np.array_equal(a[0], a[1]) and not np.array_equal(a[1], a[2])
    assert not np.array_equal(a[0], c[0])


def test_loader_without_seed_follows_manual_seed():
    from tinytorch.tensor import manual_seed
    ds = TensorDataset(np.arange(40))
    manual_seed(3)
    first = [b[0].numpy() for b in DataLoader(ds, 10, shuffle=True)]
    manual_seed(3)
    second = [b[0].numpy() for b in DataLoader(ds, 10, shuffle=True)]
    for f, s in zip(first, second):
        np.testing.assert_array_equal(f, s)


def test_loader_fast_path_uses_one_fancy_index_per_batch():
    class Spy(TensorDataset):
        calls = []
        def __getitem__(self, i):
            raise AssertionError("per-item access on the fast path")
        def get_batch(self, indices):
            Spy.calls.append(len(indices))
            return super().get_batch(indices)
    loader = DataLoader(Spy(np.zeros((70, 2)), np.zeros(70)), batch_size=32)
    assert loader.fast_path
    list(loader)
    assert Spy.calls == [32, 32, 6]


def test_loader_augmentation_is_reproducible_and_keeps_the_order():
    ds = TensorDataset(np.random.default_rng(0).random((40, 1, 5, 5)), np.arange(40))
    aug = Compose([RandomCrop(5, padding=1), RandomHorizontalFlip()])
    run = lambda t: [(xb.numpy(), yb.numpy()) for xb, yb in DataLoader(ds, 16, shuffle=True, seed=5, transform=t)]
    first, second, plain = run(aug), run(aug), run(None)
    for (x1, y1), (x2, y2), (_, y0) in zip(first, second, plain):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y0)


@pytest.mark.parametrize('kwargs, message', [({'batch_size': 0}, 'batch_size must be an integer >= 1, got 0'),
                                             ({'seed': 1.5}, 'seed must be an integer >= 0, got 1.5'),
                                             ({'transform': 3}, 'transform must be callable')])
def test_loader_bad_arguments(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message.replace('(', r'\(')):
        DataLoader(TensorDataset(np.zeros(3)), **kwargs)


def test_tensor_dataset_length_mismatch():
    with pytest.raises(ValueError, match=r"got lengths \[5, 4\] \(shapes \(5, 2\), \(4,\)\)"):
        TensorDataset(np.zeros((5, 2)), np.zeros(4))


# ---------------------------------------------------------------- transforms vs NumPy references

def test_flip_equals_reversed_last_axis_for_flipped_samples():
    x = np.random.default_rng(0).random((500, 3, 4, 6), dtype=np.float32)
    out = RandomHorizontalFlip(0.5)(x, np.random.default_rng(1))
    flipped = np.array([np.array_equal(o, xi[..., ::-1]) for o, xi in zip(out, x)])
    kept = np.array([np.array_equal(o, xi) for o, xi in zip(out, x)])
    assert np.all(flipped ^ kept)                     # each sample is exactly one of the two
    np.testing.assert_array_equal(flipped, np.random.default_rng(1).random(500) < 0.5)
    assert out is not x and np.array_equal(x, np.random.default_rng(0).random((500, 3, 4, 6), dtype=np.float32))


def test_crop_equals_the_window_of_the_padded_image():
    x = np.random.default_rng(0).random((64, 3, 32, 32), dtype=np.float32)
    out = RandomCrop(32, padding=4)(x, np.random.default_rng(7))
    rng = np.random.default_rng(7)
    top, left = rng.integers(0, 9, 64), rng.integers(0, 9, 64)
    padded = np.pad(x, ((0, 0), (0, 0), (4, 4), (4, 4)))
    for i in range(64):
        np.testing.assert_array_equal(out[i], padded[i, :, top[i]:top[i] + 32, left[i]:left[i] + 32])
    assert len(set(zip(top.tolist(), left.tolist()))) > 20      # offsets differ per sample


def test_crop_at_matches_slicing_for_rectangular_windows():
    x = np.arange(2 * 2 * 6 * 7, dtype=np.float32).reshape(2, 2, 6, 7)
    out = crop_at(x, np.array([0, 3]), np.array([4, 1]), (3, 2))
    np.testing.assert_array_equal(out[0], x[0, :, 0:3, 4:6])
    np.testing.assert_array_equal(out[1], x[1, :, 3:6, 1:3])
    with pytest.raises(ValueError, match="keep the 3x2 window inside the 6x7 images"):
        crop_at(x, np.array([0, 4]), np.array([0, 0]), (3, 2))


def test_normalize_per_channel_and_errors():
    x = np.random.default_rng(0).random((8, 3, 4, 4), dtype=np.float32)
    mean, std = np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.25, 0.3])
    np.testing.assert_allclose(Normalize(mean, std)(x), (x - mean[:, None, None]) / std[:, None, None], rtol=1e-5)
    assert Normalize(mean, std)(x).dtype == np.float32
    with pytest.raises(ValueError, match="3 mean values but the batch has 1 channels"):
        Normalize(mean, std)(x[:, :1])


def test_transforms_need_nchw():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\), got shape \(3, 4, 4\)"):
        RandomCrop(2)(np.zeros((3, 4, 4)))


# ---------------------------------------------------------------- embedded digits

def test_digits_embedded_split_is_fixed_stratified_and_disjoint():
    train, test = Digits(), Digits(train=False)
    assert (len(train), len(test)) == (1438, 359)
    assert train.images.shape[1:] == (1, 8, 8) and train.images.max() == 16
    assert not set(train.indices) & set(test.indices)
    np.testing.assert_array_equal(Digits(train=False).indices, test.indices)
    counts = np.bincount(test.labels, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37
    x, _ = train.get_batch(np.arange(5))
    assert x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1


def test_digits_file_checksum_is_verified(monkeypatch, tmp_path):
    monkeypatch.setattr(dl, 'DIGITS_SHA256', '0' * 64)
    dl.load_digits_arrays.cache_clear()
    try:
        with pytest.raises(ChecksumError, match="expected sha256 0000"):
            dl.load_digits_arrays()
    finally:
        monkeypatch.undo()
        dl.load_digits_arrays.cache_clear()


# ---------------------------------------------------------------- real data

def test_real_fashion_mnist_from_debian_package():
    folder = dl.DEBIAN_FASHION_MNIST
    if not (folder / 'train-images-idx3-ubyte.gz').exists():
        pytest.skip(f"Fashion-MNIST not installed at {folder}: run `sudo apt-get install dataset-fashion-mnist` "
                    "(or use FashionMNIST(download=True))")
    train, test = FashionMNIST(root=folder), FashionMNIST(root=folder, train=False)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert np.bincount(train.labels).tolist() == [6000] * 10 and np.bincount(test.labels).tolist() == [1000] * 10
    loader = DataLoader(train, batch_size=128, shuffle=True, seed=0)
    start = time.perf_counter()
    n = sum(len(xb) for xb, _ in loader)
    elapsed = time.perf_counter() - start
    assert n == 60000
    print(f"\nFashion-MNIST epoch, {len(loader)} batches of 128: {elapsed * 1000:.0f} ms")
