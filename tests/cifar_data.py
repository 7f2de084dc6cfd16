"""CIFAR-10 for the tests, `make cifar` and benchmarks, from the developers' offline JPEG copy.

Machines here have no internet, so the official release cannot be downloaded. The project's shared
folder holds `shared/data/cifar10-jpg/cifar10-jpg.tar.gz`: all 60,000 CIFAR-10 images as JPEG files in
`train/<class>/NNNN.jpg` and `test/<class>/NNNN.jpg` (lossy, quality 75; see its README). It is never
committed, and neither is anything made from it.

`cifar10_root()` finds that archive (``$TINYTORCH_CIFAR_JPG``, else ``shared/data/cifar10-jpg/`` beside
the repository or beside one of its parent folders), checks its sha256, unpacks it once into the user
cache, reads the two trees with `ImageFolder`, and writes them in the **official binary format**
(`data_batch_1.bin` ... `data_batch_5.bin`, `test_batch.bin`) into a folder of their own in the cache.
So the real `CIFAR10` reader is what the tests exercise: `CIFAR10(root=cifar10_root())`. It raises
`CifarMissing` with instructions when the archive is absent; tests turn that into `pytest.skip`.
The folder is kept apart from `~/.cache/tinytorch/cifar-10`, where `CIFAR10(download=True)` puts the
official release, so the lossy copy is never mistaken for it.
"""
import hashlib, os, shutil, tarfile, tempfile
from pathlib import Path

import numpy as np

ARCHIVE = Path('shared') / 'data' / 'cifar10-jpg' / 'cifar10-jpg.tar.gz'
SHA256 = '367126f7092fa95787be0ba6037424636399ffd29a1fd07b0dac6a1c2fbf9425'
REPO = Path(__file__).resolve().parent.parent


class CifarMissing(FileNotFoundError):
    "The offline CIFAR-10 JPEG archive is not on this machine."


def find_archive() -> Path:
    "Path of cifar10-jpg.tar.gz, or CifarMissing saying where it was looked for."
    env = os.environ.get('TINYTORCH_CIFAR_JPG')
    places = [Path(env)] if env else []
    places += [folder / ARCHIVE for folder in [REPO, *REPO.parents]]
    for p in places:
        if p.is_file(): return p
    shown = '\n'.join(f'  {p}' for p in places[:4])
    raise CifarMissing(f"CIFAR-10 JPEG archive not found; looked for (among others):\n{shown}\nPut the project's "
                       f"shared/ folder beside the repository, or set TINYTORCH_CIFAR_JPG to the .tar.gz. On a machine "
                       "with internet, CIFAR10(download=True) fetches the official release instead.")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''): h.update(chunk)
    return h.hexdigest()


def _unpack(archive: Path, dest: Path):
    "Unpack train/ and test/ into `dest` (atomically: a temporary folder renamed into place)."
    if (dest / 'train').is_dir() and (dest / 'test').is_dir(): return
    if (got := _sha256(archive)) != SHA256:
        raise ValueError(f"{archive}: sha256 {got} differs from the published {SHA256}; the copy is damaged")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix='.unpack-', dir=dest.parent))
    try:
        with tarfile.open(archive, 'r:gz') as tar:
            tar.extractall(tmp, filter='data')          # refuses links and paths outside tmp
        tmp.replace(dest) if not dest.exists() else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cifar10_root(verbose: bool = True) -> Path:
    "A folder holding cifar-10-batches-bin/ made from the JPEG archive (built on first use, then cached)."
    from tinytorch.dataloader import cache_dir, ImageFolder, write_cifar_bin, CIFAR10
    root = cache_dir() / 'cifar-10-from-jpg'
    batches = root / CIFAR10.folder
    files = CIFAR10.train_files + CIFAR10.test_files
    if all((batches / f).is_file() for f in files): return root
    archive = find_archive()
    jpg = cache_dir() / 'cifar10-jpg'
    if verbose: print(f"unpacking {archive} into {jpg} (once)", flush=True)
    _unpack(archive, jpg)
    for split in ('train', 'test'):
        if verbose: print(f"decoding {jpg / split} with ImageFolder and writing the official binary format (once)", flush=True)
        folder = ImageFolder(jpg / split)
        if tuple(folder.classes) != CIFAR10.classes:
            raise ValueError(f"{jpg / split}: classes {folder.classes} are not CIFAR-10's {CIFAR10.classes}")
        images, labels = folder.to_arrays()
        per_class = np.bincount(labels, minlength=10)
        # interleave the classes (image i of class 0, of class 1, ...) so every batch file holds all ten
        order = np.argsort(np.concatenate([np.arange(n) for n in per_class]) * 10 + labels, kind='stable')
        images, labels = images[order], labels[order]
        names = CIFAR10.train_files if split == 'train' else CIFAR10.test_files
        for k, name in enumerate(names):
            part = slice(k * CIFAR10.records_per_file, (k + 1) * CIFAR10.records_per_file)
            write_cifar_bin(batches / name, images[part], labels[part])
    return root
