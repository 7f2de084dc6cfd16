"""Protected tests for module 08 (DataLoader): batching and reproducible shuffling, batch transforms
(normalise, flip, crop), and the IDX and CIFAR-10 binary readers.

Run against the exported package; imports modules 02 and 08 only. Every data file is written here
byte by byte from the published format descriptions, under tmp_path; nothing is downloaded.
References are NumPy slicing and per-image loops.
"""
import gzip
import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from tinytorch.tensor import Tensor
from tinytorch.dataloader import (
    Compose, DataFormatError, DataLoader, Dataset, Digits, Normalize, RandomCrop, RandomHorizontalFlip, Subset,
    TensorDataset, collate, crop_at, read_cifar_bin, read_idx)

checks = settings(max_examples=25, deadline=None, derandomize=True, database=None)


class PerItem(Dataset):
    "The same samples with no get_batch, so the loader must fetch and collate them one by one."
    def __init__(self, base): self.base = base
    def __len__(self): return len(self.base)
    def __getitem__(self, i): return self.base[i]


def ids_dataset(n):
    return TensorDataset(np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32), np.arange(n) % 3)


def epoch_ids(loader):
    return np.concatenate([b[0].data[:, 0] for b in loader]).astype(int)


# --- DataLoader -------------------------------------------------------------------------------------

@checks
@given(n=st.integers(1, 40), bs=st.integers(1, 12), drop_last=st.booleans(), fast=st.booleans())
def test_unshuffled_batches_are_consecutive_slices(n, bs, drop_last, fast):
    ds = ids_dataset(n)
    loader = DataLoader(ds if fast else PerItem(ds), batch_size=bs, drop_last=drop_last)
    batches = list(loader)
    full, rest = divmod(n, bs)
    sizes = [bs] * full + ([] if drop_last or rest == 0 else [rest])
    assert len(loader) == len(sizes) == len(batches)
    start = 0
    for (xb, yb), size in zip(batches, sizes):
        assert isinstance(xb, Tensor) and isinstance(yb, Tensor)
        np.testing.assert_array_equal(xb.data, ds.arrays[0][start:start + size])
        np.testing.assert_array_equal(yb.data, np.arange(start, start + size) % 3)
        assert xb.dtype == np.float32 and yb.dtype == np.int64
        start += size


@checks
@given(n=st.integers(2, 40), bs=st.integers(1, 12), seed=st.integers(0, 2**31), fast=st.booleans())
def test_shuffled_epoch_is_a_permutation_with_aligned_fields(n, bs, seed, fast):
    ds = ids_dataset(n)
    loader = DataLoader(ds if fast else PerItem(ds), batch_size=bs, shuffle=True, seed=seed)
    batches = list(loader)
    seen = np.concatenate([b[0].data[:, 0] for b in batches]).astype(int)
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))                     # each sample exactly once
    np.testing.assert_array_equal(np.concatenate([b[1].data for b in batches]), seen % 3)   # labels follow


def test_shuffling_is_reproducible_per_seed_and_epoch():
    ds = ids_dataset(30)
    a, b = DataLoader(ds, 4, shuffle=True, seed=7), DataLoader(ds, 4, shuffle=True, seed=7)
    e0, e1 = epoch_ids(a), epoch_ids(a)
    np.testing.assert_array_equal(e0, epoch_ids(b))
    np.testing.assert_array_equal(e1, epoch_ids(b))
    assert e0.tolist() != e1.tolist()                                              # a new order each epoch
    assert e0.tolist() != list(range(30))
    assert e0.tolist() != epoch_ids(DataLoader(ds, 4, shuffle=True, seed=8)).tolist()
    a.set_epoch(1)
    np.testing.assert_array_equal(epoch_ids(a), e1)                                # replay an epoch


def test_shuffled_orders_are_roughly_uniform():
    ds = ids_dataset(5)
    loader = DataLoader(ds, 5, shuffle=True, seed=0)
    first = np.array([epoch_ids(loader)[0] for _ in range(500)])
    counts = np.bincount(first, minlength=5)
    assert counts.min() > 60, counts              # each sample comes first about 100 times in 500


def test_fast_and_per_item_paths_agree():
    ds = TensorDataset(np.arange(20.0).reshape(10, 2), np.arange(10))
    fast, slow = DataLoader(ds, 4, shuffle=True, seed=3), DataLoader(PerItem(ds), 4, shuffle=True, seed=3)
    for (xf, yf), (xs, ys) in zip(fast, slow):
        np.testing.assert_array_equal(xf.data, xs.data)
        np.testing.assert_array_equal(yf.data, ys.data)


def test_transform_applies_to_inputs_only_with_a_per_epoch_generator():
    images = np.random.default_rng(0).random((12, 1, 2, 3)).astype(np.float32)
    ds = TensorDataset(images, np.arange(12))
    loader = DataLoader(ds, 4, transform=lambda x: x * 10 + 1)
    xs, ys = zip(*list(loader))
    np.testing.assert_allclose(np.concatenate([x.data for x in xs]), images * 10 + 1, rtol=1e-6)
    np.testing.assert_array_equal(np.concatenate([y.data for y in ys]), np.arange(12))
    flip = DataLoader(ds, 12, shuffle=False, seed=5, transform=RandomHorizontalFlip(0.5))
    e0 = next(iter(flip))[0].data
    flip.set_epoch(0)
    np.testing.assert_array_equal(next(iter(flip))[0].data, e0)                   # augmentation replays too


def test_dataloader_rejects_bad_arguments():
    ds = ids_dataset(4)
    with pytest.raises(TypeError, match="TensorDataset"):
        DataLoader(np.zeros((4, 2)))
    for kwargs in (dict(batch_size=0), dict(batch_size=2.5), dict(seed=-1)):
        with pytest.raises(ValueError):
            DataLoader(ds, **kwargs)
    with pytest.raises(TypeError):
        DataLoader(ds, transform="flip")


def test_tensor_dataset_subset_and_collate():
    x, y = np.arange(12.0).reshape(6, 2), np.array([0, 1, 0, 1, 1, 0], np.uint8)
    ds = TensorDataset(x, Tensor(y))
    xb, yb = ds.get_batch(np.array([5, 0]))
    assert (xb.dtype, yb.dtype) == (np.float32, np.int64)
    np.testing.assert_array_equal(xb, x[[5, 0]])
    sub = Subset(ds, [4, 1, 3])
    assert len(sub) == 3
    np.testing.assert_array_equal(sub[0][0], x[4])
    with pytest.raises(ValueError, match=r"\(5,\)"):
        TensorDataset(x, y[:5])
    with pytest.raises(IndexError):
        Subset(ds, [0, 6])
    xb, yb = collate([(np.ones(2), 1), (np.zeros(2), 0)])
    np.testing.assert_array_equal(xb, [[1, 1], [0, 0]])
    with pytest.raises(ValueError, match=r"\(3,\)"):
        collate([(np.ones(2), 1), (np.ones(3), 0)])


# --- transforms -------------------------------------------------------------------------------------

def test_normalize_per_channel_and_scalar():
    xb = np.random.default_rng(0).random((4, 3, 5, 5)).astype(np.float32)
    mean, std = [0.1, 0.2, 0.3], [0.5, 1.0, 2.0]
    out = Normalize(mean, std)(xb)
    assert out.dtype == np.float32 and out.shape == xb.shape
    for c in range(3):
        np.testing.assert_allclose(out[:, c], (xb[:, c] - mean[c]) / std[c], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(Normalize(0.5, 0.25)(xb), (xb - 0.5) / 0.25, rtol=1e-6)
    flat = xb.reshape(4, 3, 25)                                              # (N, C, L) works too
    np.testing.assert_allclose(Normalize(mean, std)(flat), out.reshape(4, 3, 25), rtol=1e-6, atol=1e-6)
    ints = (xb * 255).astype(np.uint8)
    np.testing.assert_allclose(Normalize(128, 64)(ints), (ints.astype(np.float64) - 128) / 64, rtol=1e-6)


def test_normalize_errors():
    xb = np.zeros((4, 3, 5, 5), np.float32)
    with pytest.raises(ValueError, match=r"\(4, 3, 5, 5\)"):
        Normalize([0.1, 0.2], [1, 1])(xb)
    with pytest.raises(ValueError):
        Normalize(0, 0)


def test_random_horizontal_flip():
    xb = np.random.default_rng(1).random((2000, 2, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(RandomHorizontalFlip(1.0)(xb), xb[..., ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(0.0)(xb), xb)
    out = RandomHorizontalFlip(0.3)(xb, np.random.default_rng(5))
    flipped = np.array([np.array_equal(o, x[..., ::-1]) and not np.array_equal(o, x) for o, x in zip(out, xb)])
    kept = np.array([np.array_equal(o, x) for o, x in zip(out, xb)])
    assert np.all(flipped | kept)                                            # whole images, never a mix
    assert 0.25 < flipped.mean() < 0.35
    again = RandomHorizontalFlip(0.3)(xb, np.random.default_rng(5))
    np.testing.assert_array_equal(out, again)                                # the generator decides
    with pytest.raises(ValueError, match=r"\(2, 3, 4\)"):
        RandomHorizontalFlip()(xb[0])
    with pytest.raises(ValueError):
        RandomHorizontalFlip(1.5)


def crop_loop(images, top, left, size):
    h, w = size
    return np.stack([img[:, t:t + h, l:l + w] for img, t, l in zip(images, top, left)])


@checks
@given(n=st.integers(1, 6), c=st.integers(1, 3), h=st.integers(1, 8), w=st.integers(1, 8), data=st.data())
def test_crop_at_matches_slicing(n, c, h, w, data):
    ch, cw = data.draw(st.integers(1, h)), data.draw(st.integers(1, w))
    top = np.array(data.draw(st.lists(st.integers(0, h - ch), min_size=n, max_size=n)))
    left = np.array(data.draw(st.lists(st.integers(0, w - cw), min_size=n, max_size=n)))
    x = np.random.default_rng(n * 100 + h).random((n, c, h, w)).astype(np.float32)
    np.testing.assert_array_equal(crop_at(x, top, left, (ch, cw)), crop_loop(x, top, left, (ch, cw)))


def test_crop_at_rejects_windows_outside_the_image():
    x = np.zeros((2, 1, 5, 5), np.float32)
    with pytest.raises(ValueError):
        crop_at(x, np.array([0, 3]), np.array([0, 0]), 3)
    with pytest.raises(ValueError):
        crop_at(x, np.array([0]), np.array([0]), 3)                        # one offset per image


def test_random_crop_is_a_window_of_the_padded_image():
    rng = np.random.default_rng(2)
    xb = rng.random((32, 3, 8, 10)).astype(np.float32)
    out = RandomCrop((8, 10), padding=2)(xb, np.random.default_rng(9))
    assert out.shape == xb.shape and out.dtype == np.float32
    padded = np.pad(xb, ((0, 0), (0, 0), (2, 2), (2, 2)))
    offsets = set()
    for o, p in zip(out, padded):
        hits = [(t, l) for t in range(5) for l in range(5) if np.array_equal(o, p[:, t:t + 8, l:l + 10])]
        assert hits, "each crop must be a window of the zero-padded image"
        offsets.add(hits[0])
    assert len(offsets) > 5                                                 # offsets vary per image
    np.testing.assert_array_equal(RandomCrop(3)(xb[:, :, :3, :3], rng), xb[:, :, :3, :3])
    with pytest.raises(ValueError, match="12"):
        RandomCrop(12, padding=1)(xb)


def test_compose_applies_in_order():
    xb = np.random.default_rng(3).random((4, 1, 3, 3)).astype(np.float32)
    pipeline = Compose([RandomHorizontalFlip(1.0), Normalize(0.5, 0.5), lambda x: x * 2])
    np.testing.assert_allclose(pipeline(xb), ((xb[..., ::-1] - 0.5) / 0.5) * 2, rtol=1e-6)


# --- IDX files --------------------------------------------------------------------------------------

IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(array):
    "0, 0, type code, ndim, big-endian uint32 dims, big-endian data: the IDX layout."
    header = struct.pack(">BBBB", 0, 0, IDX_CODES[array.dtype.type], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype", list(IDX_CODES))
@pytest.mark.parametrize("shape", [(7,), (3, 28, 28), (2, 3, 4, 5)])
def test_read_idx_reads_every_type(tmp_path, dtype, shape):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal(shape) * 100).astype(dtype) if np.dtype(dtype).kind == "f" else \
        rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    path = tmp_path / "data.idx"
    path.write_bytes(idx_bytes(a))
    got = read_idx(path)
    assert got.shape == a.shape and got.dtype.kind == a.dtype.kind and got.dtype.itemsize == a.dtype.itemsize
    np.testing.assert_array_equal(got, a)


def test_read_idx_gzipped_and_with_expected_magic(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (5, 4, 4), dtype=np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    (tmp_path / "img.gz").write_bytes(gzip.compress(idx_bytes(images)))
    (tmp_path / "lab").write_bytes(idx_bytes(labels))
    np.testing.assert_array_equal(read_idx(tmp_path / "img.gz", magic=2051), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "lab", magic=2049), labels)
    with pytest.raises(DataFormatError, match="2049"):
        read_idx(tmp_path / "img.gz", magic=2049)                          # images where labels were expected


def test_read_idx_rejects_bad_files(tmp_path):
    good = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))
    cases = {"short": good[:3], "magic": b"\x01\x02" + good[2:], "type": good[:2] + b"\x07" + good[3:],
             "header": good[:6], "truncated": good[:-1], "long": good + b"\x00",
             "gzip": gzip.compress(good)[:-5]}
    for name, raw in cases.items():
        path = tmp_path / f"bad_{name}.idx"
        path.write_bytes(raw)
        with pytest.raises(DataFormatError) as e:
            read_idx(path)
        assert path.name in str(e.value), e.value                         # the error names the file


# --- CIFAR-10 binary files --------------------------------------------------------------------------

def cifar_bytes(images, labels):
    "Each record: one label byte, then 1024 red, 1024 green and 1024 blue bytes, row-major."
    return b"".join(bytes([int(l)]) + img.tobytes() for img, l in zip(images, labels))


def test_read_cifar_bin(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 1, 7])
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(cifar_bytes(images, labels))
    got_images, got_labels = read_cifar_bin(path)
    assert got_images.shape == (6, 3, 32, 32) and got_images.dtype == np.uint8
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_labels.dtype == np.int64
    # the first pixel bytes of record 1 are its red plane's top row
    raw = path.read_bytes()
    np.testing.assert_array_equal(got_images[1, 0, 0], np.frombuffer(raw[3073 + 1:3073 + 33], np.uint8))
    got_images, _ = read_cifar_bin(path, expected_records=6)
    with pytest.raises(DataFormatError):
        read_cifar_bin(path, expected_records=5)


def test_read_cifar_bin_rejects_bad_files(tmp_path):
    images = np.zeros((2, 3, 32, 32), np.uint8)
    bad_size = tmp_path / "cut.bin"
    bad_size.write_bytes(cifar_bytes(images, [1, 2])[:-10])
    with pytest.raises(DataFormatError, match="cut.bin"):
        read_cifar_bin(bad_size)
    bad_label = tmp_path / "label.bin"
    bad_label.write_bytes(cifar_bytes(images, [1, 12]))
    with pytest.raises(DataFormatError, match="12"):
        read_cifar_bin(bad_label)


# --- the embedded digits ----------------------------------------------------------------------------

def test_digits_batches_end_to_end():
    train, test = Digits(train=True), Digits(train=False)
    assert len(train) + len(test) == 1797
    assert abs(len(test) - 0.2 * 1797) < 10
    assert not set(train.indices) & set(test.indices)
    xb, yb = next(iter(DataLoader(train, batch_size=64, shuffle=True, seed=0)))
    assert xb.shape == (64, 1, 8, 8) and xb.dtype == np.float32 and yb.dtype == np.int64
    assert 0.0 <= xb.data.min() and xb.data.max() <= 1.0
    assert set(np.unique(yb.data)) <= set(range(10))
    assert sorted(np.bincount(test.labels, minlength=10))[0] >= 30           # stratified: every class in test
