"""`make cifar`: train a small residual CNN on CIFAR-10's 50,000 training images with TinyTorch, report
the test accuracy on the 10,000 test images, the wall time and a learning-curve figure, then time the
same recipe in PyTorch (when it is installed) for a time ratio.

The recipe follows what the fast CIFAR-10 training results do (David Page's ResNet-9 "DAWNBench"
series, Keller Jordan's airbench), scaled down to what two CPU cores can afford in minutes: channel
widths 16-32-64-128 (a quarter of ResNet-9's, about 1/16 of its work) and 7 epochs.

- a ResNet-9-style network: a 3x3 "prep" convolution, then three stages that each widen the channels
  with a convolution and halve the resolution with 2x2 max pooling; stages 1 and 3 add a residual
  branch of two more convolutions. Pooling comes *before* batch norm and ReLU, so those run on a
  quarter of the pixels. A global max pool and one linear layer, whose logits are scaled by 1/8, end it;
- batch norm after every convolution (so the convolutions need no bias);
- label smoothing 0.2 (the targets are 0.82 for the true class and 0.02 elsewhere), which keeps the
  network from growing over-confident in a short run;
- SGD with Nesterov momentum 0.9 and weight decay 5e-4, batches of 256, and a one-cycle learning
  rate: linear warm-up to the peak (0.2) over the first quarter of the steps, then linear decay to
  zero, so the last steps settle into a minimum instead of jumping between them;
- augmentation: random crops of the image padded by 4 pixels (translations) and horizontal flips;
- test-time augmentation: each test image is classified from the average of its logits and those of
  its mirror image.

    python tests/cifar.py [--epochs N] [--widths A,B,C,D] [--train-subset N] [--torch {epoch,full,off}]

The data comes from `tests/cifar_data.py` (the developers' offline JPEG copy of CIFAR-10, converted
once into the official binary format and read by `tinytorch.dataloader.CIFAR10`).
"""
import argparse, math, os, sys, time
from pathlib import Path

import tinytorch   # before NumPy: TinyTorch's OpenBLAS setting applies only then (tinytorch/__init__.py)
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tinytorch.tensor import Tensor, manual_seed
from tinytorch.layers import Module, Linear
from tinytorch.activations import ReLU
from tinytorch.dense import Sequential, count_parameters
from tinytorch.spatial import Conv2d, BatchNorm2d, MaxPool2d
from tinytorch.dataloader import (CIFAR10, DataLoader, Compose, RandomCrop, RandomHorizontalFlip, Normalize,
                                  DatasetNotFoundError)
from tinytorch.autograd import no_grad
from tinytorch.optimizers import SGD
from tinytorch.training import CrossEntropyLoss, ProgressBar, accuracy

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)   # CIFAR-10 training set, per channel
DEFAULTS = dict(epochs=7, widths=(16, 32, 64, 128), batch_size=256, lr=0.2, warmup=0.25, momentum=0.9,
                weight_decay=5e-4, label_smoothing=0.2, crop_padding=4, seed=0)


# ---------------------------------------------------------------- the network, in TinyTorch
def conv_bn(c_in, c_out, pool=False):
    "3x3 convolution (no bias: batch norm follows), optional 2x2 max pool, batch norm, ReLU."
    layers = [Conv2d(c_in, c_out, 3, padding=1, bias=False)] + ([MaxPool2d(2)] if pool else [])
    return Sequential(*layers, BatchNorm2d(c_out), ReLU())


class Residual(Module):
    "x + f(x)."
    def __init__(self, body): self.body = body
    def forward(self, x): return x + self.body(x)


class GlobalMaxPool(Module):
    "(N, C, H, W) -> (N, C): the largest activation of each channel."
    def forward(self, x): return x.max(axis=(2, 3))


class Scale(Module):
    def __init__(self, factor): self.factor = factor
    def forward(self, x): return x * self.factor


def resnet9(widths=(32, 64, 128, 256)) -> Sequential:
    "ResNet-9-style CIFAR-10 network with the given channel widths (prep, stage 1, stage 2, stage 3)."
    w0, w1, w2, w3 = widths
    return Sequential(
        conv_bn(3, w0),
        conv_bn(w0, w1, pool=True), Residual(Sequential(conv_bn(w1, w1), conv_bn(w1, w1))),
        conv_bn(w1, w2, pool=True),
        conv_bn(w2, w3, pool=True), Residual(Sequential(conv_bn(w3, w3), conv_bn(w3, w3))),
        GlobalMaxPool(), Linear(w3, 10), Scale(0.125))


def one_cycle(step: int, total: int, peak: float, warmup: float) -> float:
    "Learning rate at `step` of `total`: linear from 0 up to `peak` over the first `warmup` share, then down to 0."
    rise = max(1, int(total * warmup))
    return peak * (step + 1) / rise if step < rise else peak * max(0.0, (total - step) / (total - rise))


# ---------------------------------------------------------------- data
def load_cifar(train_subset=None, seed=0):
    from cifar_data import cifar10_root
    root = cifar10_root()
    train, test = CIFAR10(root=root, train=True), CIFAR10(root=root, train=False)
    if train_subset:
        keep = np.random.default_rng(seed).permutation(len(train))[:train_subset]
        train.images, train.labels = train.images[keep], train.labels[keep]
    return train, test


def train_loader(train, cfg, seed):
    augment = Compose([RandomCrop(32, padding=cfg['crop_padding']), RandomHorizontalFlip(), Normalize(MEAN, STD)])
    return DataLoader(train, batch_size=cfg['batch_size'], shuffle=True, drop_last=True, seed=seed, transform=augment)


def normalized(images: np.ndarray) -> np.ndarray:
    return Normalize(MEAN, STD)(images.astype(np.float32) / 255)


# ---------------------------------------------------------------- TinyTorch training
def evaluate(model, images, labels, batch_size=1000, flip=True) -> float:
    "Test accuracy; with `flip`, each image's logits are averaged with those of its mirror image."
    model.eval()
    correct = 0
    with no_grad():
        for i in range(0, len(images), batch_size):
            x = normalized(images[i:i + batch_size])
            logits = model(Tensor(x)).data
            if flip: logits = logits + model(Tensor(np.ascontiguousarray(x[..., ::-1]))).data
            correct += int((logits.argmax(axis=1) == labels[i:i + batch_size]).sum())
    model.train()
    return correct / len(images)


def train_tinytorch(train, test, cfg, verbose=True) -> dict:
    manual_seed(cfg['seed'])
    model = resnet9(cfg['widths'])
    loader = train_loader(train, cfg, cfg['seed'])
    opt = SGD(model.parameters(), lr=0.0, momentum=cfg['momentum'], nesterov=True, weight_decay=cfg['weight_decay'])
    loss_fn = CrossEntropyLoss(label_smoothing=cfg['label_smoothing'])
    total, step = cfg['epochs'] * len(loader), 0
    history = {'epoch': [], 'time': [], 'train_seconds': [], 'train_loss': [], 'train_acc': [], 'test_acc': [], 'cpu': []}
    if verbose:
        print(f"TinyTorch: {count_parameters(model):,} parameters, widths {cfg['widths']}, {len(train)} training images, "
              f"{cfg['epochs']} epochs of {len(loader)} batches of {cfg['batch_size']}", flush=True)
    start, cpu0, training = time.perf_counter(), time.process_time(), 0.0
    for epoch in range(1, cfg['epochs'] + 1):
        epoch_start = time.perf_counter()
        bar = ProgressBar(len(loader), desc=f"epoch {epoch}/{cfg['epochs']}") if verbose else None
        losses, hits, seen = [], 0, 0
        for x, y in loader:
            opt.lr = one_cycle(step, total, cfg['lr'], cfg['warmup'])
            out = model(x)
            loss = loss_fn(out, y)
            opt.zero_grad(); loss.backward(); opt.step()
            step += 1
            losses.append(loss.item()); hits += int((out.data.argmax(1) == y.data).sum()); seen += len(y)
            if bar: bar.update(extra=f"loss {np.mean(losses[-20:]):.3f} lr {opt.lr:.3f}")
        training += time.perf_counter() - epoch_start                 # training alone, without the test pass
        test_acc = evaluate(model, test.images, test.labels, flip=epoch == cfg['epochs'])
        history['epoch'].append(epoch); history['time'].append(time.perf_counter() - start)
        history['train_seconds'].append(training)
        history['cpu'].append(time.process_time() - cpu0)
        history['train_loss'].append(float(np.mean(losses))); history['train_acc'].append(hits / seen)
        history['test_acc'].append(test_acc)
        if bar: bar.close(f"loss {np.mean(losses):.3f}, train acc {hits / seen:.3f}, test acc "
                          f"{test_acc:.4f}{' (with flip TTA)' if epoch == cfg['epochs'] else ''}, "
                          f"{history['time'][-1]:.0f} s elapsed, load {os.getloadavg()[0]:.1f}")
    history['model'] = model
    return history


# ---------------------------------------------------------------- the same recipe in PyTorch
def train_torch(train, test, cfg, epochs=None, verbose=True) -> dict:
    import torch
    nn = torch.nn
    torch.manual_seed(cfg['seed']); torch.set_num_threads(os.cpu_count() or 1)
    def cbr(ci, co, pool=False):
        return nn.Sequential(nn.Conv2d(ci, co, 3, padding=1, bias=False), *([nn.MaxPool2d(2)] if pool else []),
                             nn.BatchNorm2d(co), nn.ReLU())
    class Res(nn.Module):
        def __init__(self, body): super().__init__(); self.body = body
        def forward(self, x): return x + self.body(x)
    w0, w1, w2, w3 = cfg['widths']
    model = nn.Sequential(cbr(3, w0), cbr(w0, w1, True), Res(nn.Sequential(cbr(w1, w1), cbr(w1, w1))), cbr(w1, w2, True),
                          cbr(w2, w3, True), Res(nn.Sequential(cbr(w3, w3), cbr(w3, w3))),
                          nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(w3, 10))
    loader = train_loader(train, cfg, cfg['seed'])              # same batches and augmentation as TinyTorch
    opt = torch.optim.SGD(model.parameters(), lr=0.0, momentum=cfg['momentum'], nesterov=True,
                          weight_decay=cfg['weight_decay'])
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg['label_smoothing'])
    epochs = epochs or cfg['epochs']
    total, step = cfg['epochs'] * len(loader), 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        bar = ProgressBar(len(loader), desc=f"PyTorch epoch {epoch}/{epochs}") if verbose else None
        for x, y in loader:
            for g in opt.param_groups: g['lr'] = one_cycle(step, total, cfg['lr'], cfg['warmup'])
            out = model(torch.from_numpy(x.data)) * 0.125
            loss = loss_fn(out, torch.from_numpy(y.data))
            opt.zero_grad(); loss.backward(); opt.step()
            step += 1
            if bar: bar.update(extra=f"loss {loss.item():.3f}")
        if bar: bar.close()
    seconds = time.perf_counter() - start
    model.eval(); correct = 0
    with torch.no_grad():
        for i in range(0, len(test.images), 1000):
            x = torch.from_numpy(normalized(test.images[i:i + 1000]))
            logits = model(x) + model(torch.flip(x, dims=[3]))
            correct += int((logits.argmax(1).numpy() == test.labels[i:i + 1000]).sum())
    return {'seconds': seconds, 'epochs': epochs, 'test_acc': correct / len(test.images)}


# ---------------------------------------------------------------- report
def plot_curve(history, path, title):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4))
    minutes = np.array(history['time']) / 60
    ax.plot(minutes, np.array(history['train_acc']) * 100, 'o-', label='train accuracy (augmented batches)')
    ax.plot(minutes, np.array(history['test_acc']) * 100, 's-', label='test accuracy (10,000 images; flip TTA at the end)')
    ax.axhline(80, color='grey', ls=':', lw=1)
    ax.set_xlim(0, max(minutes[-1] * 1.05, 1)); ax.set_ylim(0, 100)
    ax.set_xlabel('wall time (minutes)'); ax.set_ylabel('accuracy (%)'); ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3); ax.legend(loc='lower right')
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.tmp.png'); fig.savefig(tmp, dpi=120); os.replace(tmp, path)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description="Train a ResNet-9-style CNN on CIFAR-10 with TinyTorch (make cifar).")
    p.add_argument('--epochs', type=int, default=DEFAULTS['epochs'])
    p.add_argument('--widths', default=','.join(map(str, DEFAULTS['widths'])))
    p.add_argument('--batch-size', type=int, default=DEFAULTS['batch_size'])
    p.add_argument('--lr', type=float, default=DEFAULTS['lr'])
    p.add_argument('--label-smoothing', type=float, default=DEFAULTS['label_smoothing'])
    p.add_argument('--train-subset', type=int, default=None, help='train on this many images (recipe search)')
    p.add_argument('--torch', choices=('epoch', 'full', 'off'), default='epoch',
                   help="PyTorch comparison: one epoch of the same recipe (default), the full run, or none")
    p.add_argument('--figure', default=str(Path.home() / '.cache' / 'tinytorch' / 'cifar' / 'learning_curve.png'))
    args = p.parse_args(argv)
    cfg = dict(DEFAULTS, epochs=args.epochs, widths=tuple(int(w) for w in args.widths.split(',')),
               batch_size=args.batch_size, lr=args.lr, label_smoothing=args.label_smoothing)
    try:
        train, test = load_cifar(args.train_subset, cfg['seed'])
    except Exception as e:
        if type(e).__name__ not in ('CifarMissing', 'DatasetNotFoundError'): raise
        raise SystemExit(f"make cifar: no CIFAR-10 data here.\n{e}")
    load0 = os.getloadavg()
    print(f"{os.cpu_count()} cores, load average {load0[0]:.1f} at start", flush=True)
    h = train_tinytorch(train, test, cfg)
    wall, acc = h['time'][-1], h['test_acc'][-1]
    load1 = os.getloadavg()
    print(f"\nTinyTorch: test accuracy {acc * 100:.2f}% on {len(test)} images (flip TTA), wall time {wall:.0f} s "
          f"({wall / 60:.1f} min; training {h['train_seconds'][-1]:.0f} s, {h['train_seconds'][-1] / cfg['epochs']:.0f} s/epoch; "
          f"CPU time {h['cpu'][-1]:.0f} s), load average {load0[0]:.1f} at start, {load1[0]:.1f} at end "
          f"(15-min {load1[2]:.1f})", flush=True)
    title = (f"TinyTorch ResNet-9 {cfg['widths']} on CIFAR-10: {acc * 100:.1f}% in {wall / 60:.1f} min\n"
             f"{cfg['epochs']} epochs, {os.cpu_count()} cores, 15-min load average {load1[2]:.1f}")
    plot_curve(h, Path(args.figure), title)
    print(f"learning curve: {args.figure}")
    if args.torch != 'off':
        try: import torch  # noqa: F401
        except ImportError:
            print("PyTorch is not installed: no time ratio"); return
        epochs = cfg['epochs'] if args.torch == 'full' else 1
        t = train_torch(train, test, cfg, epochs=epochs)
        ours = h['train_seconds'][epochs - 1]
        what = 'all epochs' if epochs == cfg['epochs'] else 'first epoch'
        print(f"PyTorch {__import__('torch').__version__}, same recipe and batches, {what}: training {t['seconds']:.0f} s"
              + (f", test accuracy {t['test_acc'] * 100:.2f}%" if epochs == cfg['epochs'] else '')
              + f"; TinyTorch trained the same in {ours:.0f} s: time ratio TinyTorch / PyTorch {ours / t['seconds']:.2f}x "
              f"(training only, no test passes; load average {os.getloadavg()[0]:.1f})")


if __name__ == '__main__':
    main()
