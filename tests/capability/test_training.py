"""Training milestone capability: "Can train neural networks on real datasets".

Everything here goes through TinyTorch's public API only (the modules a learner exports), and each
test trains from scratch with a fixed seed:

1. an MLP solves XOR (100 %);
2. an MLP reaches >= 95 % on the held-out part of the embedded UCI 8x8 digits, in seconds;
3. a CNN (conv-pool-conv-pool-linear, with batch norm and a hidden layer) reaches >= 90 % on the official 10,000-image Fashion-MNIST
   test set after training on all 60,000 training images (skipped, with instructions, when the data
   is not installed); the trained model is cached for the Inference Deployment and Serving tests;
4. a tiny transformer learns to reverse token sequences (>= 95 % token accuracy);
5. a small CNN reaches >= 45 % on the 10,000 CIFAR-10 test images after one epoch on 20,000
   training images (skipped, with instructions, when the offline CIFAR-10 copy is absent; the full
   50,000-image run is `make cifar`).

Each test prints its accuracy and wall time; run `pytest -s tests/capability/test_training.py` to see them.
"""
import time

import numpy as np
import pytest

from tinytorch.tensor import Tensor, manual_seed
from tinytorch.layers import Module, Linear
from tinytorch.activations import ReLU, Tanh
from tinytorch.dense import MLP, Sequential
from tinytorch.spatial import Conv2d, MaxPool2d, Flatten, BatchNorm2d
from tinytorch.attention import Embedding, PositionalEncoding, TransformerBlock, LayerNorm
from tinytorch.dataloader import (DataLoader, TensorDataset, Digits, FashionMNIST, DatasetNotFoundError, CIFAR10,
                                  Compose, RandomCrop, RandomHorizontalFlip, Normalize)
from tinytorch.autograd import no_grad
from tinytorch.optimizers import Adam, SGD, CosineWarmupLR
from tinytorch.training import Trainer, CrossEntropyLoss, accuracy, fashion_cnn, fashion_cnn_checkpoint, load_checkpoint
from cifar_data import cifar10_root, CifarMissing


def report(what: str, acc: float, seconds: float, extra: str = ''):
    print(f"\n[training capability] {what}: accuracy {acc:.4f}, wall time {seconds:.1f} s{extra}")


def test_mlp_solves_xor():
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([0, 1, 1, 0])
    start = time.perf_counter()
    manual_seed(0)
    model = MLP(2, [8], 2, activation=Tanh)
    trainer = Trainer(model, Adam(model.parameters(), lr=0.05), CrossEntropyLoss(), verbose=False)
    history = trainer.fit(DataLoader(TensorDataset(x, y), batch_size=4), epochs=300)
    with no_grad(): acc = accuracy(model(Tensor(x)), y)
    report('MLP on XOR', acc, time.perf_counter() - start, f", final loss {history['train_loss'][-1]:.4f}")
    assert acc == 1.0
    assert history['train_loss'][-1] < 0.05


def test_mlp_on_embedded_digits():
    start = time.perf_counter()
    manual_seed(0)
    train, test = Digits(train=True), Digits(train=False)        # fixed stratified 80/20 split
    model = Sequential(Flatten(), MLP(64, [128], 10))
    trainer = Trainer(model, Adam(model.parameters(), lr=3e-3), CrossEntropyLoss(), verbose=False)
    trainer.fit(DataLoader(train, batch_size=32, shuffle=True, seed=0), epochs=15)
    result = trainer.evaluate(DataLoader(test, batch_size=512))
    seconds = time.perf_counter() - start
    report(f'MLP on embedded digits ({len(train)} train / {len(test)} held out)', result['acc'], seconds)
    assert result['acc'] >= 0.95
    assert seconds < 60, "the digits MLP should train in seconds"


def test_cnn_on_full_fashion_mnist(fashion_mnist):
    train, test = fashion_mnist
    assert (len(train), len(test)) == (60000, 10000)
    start = time.perf_counter()
    path = fashion_cnn_checkpoint(retrain=True)          # trains for real, and caches it for later milestones
    seconds = time.perf_counter() - start
    model = fashion_cnn()
    meta = load_checkpoint(path, model)
    acc = Trainer(model, Adam(model.parameters()), CrossEntropyLoss(), verbose=False).evaluate(
        DataLoader(test, batch_size=1000))['acc']
    assert abs(acc - meta['test_acc']) < 1e-6, "the saved model must score what training measured"
    per_epoch = ', '.join(f"{t:.0f}" for t in meta['epoch_seconds'])
    report('CNN on full Fashion-MNIST (official 10,000 test images)', acc, seconds,
           f" (epochs {meta['recipe_epochs']}, seconds per epoch: {per_epoch})")
    assert acc >= 0.90
    assert seconds < 15 * 60, "the Fashion-MNIST CNN must train in minutes"


class SequenceReverser(Module):
    "Token embedding + sinusoidal positions -> pre-norm transformer blocks -> per-position class scores."
    def __init__(self, vocab: int, dim: int, heads: int, depth: int, max_len: int):
        self.embed = Embedding(vocab, dim)
        self.pos = PositionalEncoding(dim, max_len)
        self.blocks = [TransformerBlock(dim, heads) for _ in range(depth)]
        self.norm = LayerNorm(dim)
        self.head = Linear(dim, vocab)

    def forward(self, ids):
        x = self.pos(self.embed(ids))
        for block in self.blocks: x = block(x)
        return self.head(self.norm(x))


def test_tiny_transformer_reverses_sequences():
    vocab, length = 10, 8
    rng = np.random.default_rng(0)
    train_seqs, test_seqs = rng.integers(0, vocab, (8000, length)), rng.integers(0, vocab, (1000, length))
    start = time.perf_counter()
    manual_seed(0)
    model = SequenceReverser(vocab, dim=32, heads=4, depth=2, max_len=length)
    opt = Adam(model.parameters(), lr=3e-3)
    loader = DataLoader(TensorDataset(train_seqs, train_seqs[:, ::-1].copy()), batch_size=64, shuffle=True, seed=0)
    epochs = 2
    trainer = Trainer(model, opt, CrossEntropyLoss(), scheduler=CosineWarmupLR(opt, 50, epochs * len(loader)), verbose=False)
    trainer.fit(loader, epochs=epochs)
    with no_grad(): acc = accuracy(model(test_seqs), test_seqs[:, ::-1])
    report('tiny transformer reversing 8-token sequences (token accuracy on 1,000 new sequences)', acc,
           time.perf_counter() - start)
    assert acc >= 0.95


class GlobalMaxPool(Module):
    "(N, C, H, W) -> (N, C): the largest activation of each channel."
    def forward(self, x): return x.max(axis=(2, 3))


def conv_bn(c_in, c_out, pool=False):
    "3x3 convolution, optional 2x2 max pooling, batch norm, ReLU."
    return Sequential(Conv2d(c_in, c_out, 3, padding=1, bias=False), *([MaxPool2d(2)] if pool else []),
                      BatchNorm2d(c_out), ReLU())


def test_cnn_on_cifar10_subset():
    try:
        root = cifar10_root(verbose=False)     # first use: unpack and convert to the official format (~1 min, once)
    except CifarMissing as e:
        pytest.skip(f"CIFAR-10 is not available on this machine. {e}")
    train, test = CIFAR10(root=root), CIFAR10(root=root, train=False)      # the real binary-format reader
    assert (len(train), len(test)) == (50000, 10000)
    keep = np.random.default_rng(0).permutation(len(train))[:20000]
    train.images, train.labels = train.images[keep], train.labels[keep]
    start = time.perf_counter()
    manual_seed(0)
    model = Sequential(conv_bn(3, 32, pool=True), conv_bn(32, 64, pool=True), conv_bn(64, 128, pool=True),
                       GlobalMaxPool(), Linear(128, 10))
    normalize = Normalize((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    loader = DataLoader(train, batch_size=64, shuffle=True, drop_last=True, seed=0,
                        transform=Compose([RandomHorizontalFlip(), normalize]))
    opt = Adam(model.parameters(), lr=3e-3)
    trainer = Trainer(model, opt, CrossEntropyLoss(), verbose=False,
                      scheduler=CosineWarmupLR(opt, warmup_steps=30, total_steps=len(loader)))
    trainer.fit(loader, epochs=1)
    test_set = TensorDataset(normalize(test.images / np.float32(255)), test.labels)
    acc = trainer.evaluate(DataLoader(test_set, batch_size=1000))['acc']
    report('CNN on CIFAR-10, one epoch on 20,000 training images (official 10,000 test images)', acc,
           time.perf_counter() - start)
    assert acc >= 0.45
