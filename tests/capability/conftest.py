"""Shared by the capability tests: they run in course order, and they share one trained Fashion-MNIST CNN.

The Training test trains the CNN for real (`fashion_cnn_checkpoint(retrain=True)`); the Inference
Deployment and Serving tests then reuse that checkpoint from the user cache through the
`fashion_checkpoint` fixture, so one `pytest tests/` trains it once. The checkpoint's file name
fingerprints the framework's source, so a changed framework is never served a stale model.
"""
import json
from pathlib import Path

import pytest

COURSE = json.loads((Path(__file__).resolve().parents[2] / 'milestones' / 'milestones.json').read_text())
ORDER = [Path(ms['capability_test']).name for ms in COURSE['milestones']]

FASHION_MISSING = ("Fashion-MNIST is not installed. On Debian/Ubuntu: `sudo apt-get install dataset-fashion-mnist` "
                   "(files land in /usr/share/datasets/fashion-mnist); or set TINYTORCH_DATA to a folder holding "
                   "the four IDX files; or FashionMNIST(download=True).")


def pytest_collection_modifyitems(session, config, items):
    "Capability tests last, in milestone order (a stable sort keeps each file's own order)."
    def rank(item):
        name = Path(str(item.fspath)).name
        return ORDER.index(name) + 1 if name in ORDER and 'capability' in Path(str(item.fspath)).parts else 0
    items.sort(key=rank)
    for item in items:   # under pytest-xdist (--dist loadgroup) they run in one worker, in this order
        if rank(item):
            item.add_marker(pytest.mark.xdist_group('capability'))


@pytest.fixture(scope='session')
def fashion_mnist():
    "(train, test) Fashion-MNIST datasets; skips with instructions when the data is missing."
    from tinytorch.dataloader import DatasetNotFoundError, FashionMNIST
    try:
        return FashionMNIST(train=True), FashionMNIST(train=False)
    except DatasetNotFoundError as e:
        pytest.skip(f"{FASHION_MISSING} Details: {e}")


@pytest.fixture(scope='session')
def fashion_checkpoint():
    "Path of the cached Fashion-MNIST CNN checkpoint (trained on first use); skips when the data is missing."
    from tinytorch.dataloader import DatasetNotFoundError
    from tinytorch.training import fashion_cnn_checkpoint
    try:
        return fashion_cnn_checkpoint()
    except DatasetNotFoundError as e:
        pytest.skip(f"{FASHION_MISSING} Details: {e}")
