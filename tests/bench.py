"""`make bench`: TinyTorch speed against PyTorch CPU on the same machine.

Each case prints TinyTorch's median time and, when `torch` imports, PyTorch's median time and the
ratio (TinyTorch / PyTorch; at most 2.0 meets the course target). Each framework is timed in its own
process, so PyTorch's OpenMP threads and NumPy's BLAS threads never compete for the same cores.
Not a test: timings never gate CI. A case whose modules are not built yet says why and is skipped.
"""
import json, os, subprocess, sys, time, statistics
import numpy as np

def median_ms(fn, repeats=15, warmup=3):
    for _ in range(warmup): fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3

def data(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)

def labels(n, seed=1): return np.random.default_rng(seed).integers(0, 10, n)

# ---- TinyTorch cases: each returns a zero-argument function to time ----
def tt_matmul():
    from tinytorch.tensor import Tensor
    a, b = Tensor(data(512, 512)), Tensor(data(512, 512, seed=1))
    return lambda: a @ b

def tt_linear():
    from tinytorch.tensor import Tensor
    from tinytorch.layers import Linear
    from tinytorch.autograd import no_grad
    layer, x = Linear(784, 256), Tensor(data(128, 784))
    def run():
        with no_grad(): layer(x)
    return run

def tt_conv(c, oc, backward):
    from tinytorch.tensor import Tensor
    from tinytorch.spatial import Conv2d
    from tinytorch.autograd import no_grad
    conv = Conv2d(c, oc, 3, padding=1)
    if not backward:
        x = Tensor(data(64, c, 32, 32))
        def fwd():
            with no_grad(): conv(x)
        return fwd
    x = Tensor(data(64, c, 32, 32), requires_grad=True)
    def fwd_bwd():
        conv(x).sum().backward()
        x.grad = None; conv.zero_grad()
    return fwd_bwd

def tt_maxpool():
    from tinytorch.tensor import Tensor
    from tinytorch.spatial import MaxPool2d
    from tinytorch.autograd import no_grad
    pool, x = MaxPool2d(2), Tensor(data(64, 32, 32, 32))
    def run():
        with no_grad(): pool(x)
    return run

def tt_mha():
    from tinytorch.tensor import Tensor
    from tinytorch.attention import MultiHeadAttention
    from tinytorch.autograd import no_grad
    mha, x = MultiHeadAttention(128, 4), Tensor(data(32, 64, 128))
    def run():
        with no_grad(): mha(x, need_weights=True)
    return run

def tt_train_step(model_name):
    from tinytorch.tensor import Tensor
    from tinytorch.optimizers import Adam
    from tinytorch.training import CrossEntropyLoss
    from tinytorch.dense import Sequential, MLP
    from tinytorch.spatial import Conv2d, MaxPool2d, Flatten
    from tinytorch.layers import Linear
    from tinytorch.activations import ReLU
    if model_name == "mlp":
        model, x = MLP(784, [256], 10), Tensor(data(128, 784))
    else:
        model = Sequential(Conv2d(1, 16, 3, padding=1), ReLU(), MaxPool2d(2),
                           Conv2d(16, 32, 3, padding=1), ReLU(), MaxPool2d(2), Flatten(), Linear(32 * 7 * 7, 10))
        x = Tensor(data(128, 1, 28, 28))
    y, opt, loss_fn = Tensor(labels(128)), Adam(model.parameters(), lr=1e-3), CrossEntropyLoss()
    def step():
        opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
    return step

# ---- the same cases in PyTorch ----
def pt_matmul():
    import torch
    a, b = torch.from_numpy(data(512, 512)), torch.from_numpy(data(512, 512, seed=1))
    return lambda: a @ b

def pt_linear():
    import torch
    layer, x = torch.nn.Linear(784, 256), torch.from_numpy(data(128, 784))
    def run():
        with torch.no_grad(): layer(x)
    return run

def pt_conv(c, oc, backward):
    import torch
    conv = torch.nn.Conv2d(c, oc, 3, padding=1)
    x = torch.from_numpy(data(64, c, 32, 32))
    if not backward:
        def fwd():
            with torch.no_grad(): conv(x)
        return fwd
    x.requires_grad_()
    def fwd_bwd():
        conv(x).sum().backward()
        x.grad = None; conv.zero_grad(set_to_none=True)
    return fwd_bwd

def pt_maxpool():
    import torch
    x = torch.from_numpy(data(64, 32, 32, 32))
    def run():
        with torch.no_grad(): torch.nn.functional.max_pool2d(x, 2)
    return run

def pt_mha():
    import torch
    mha, x = torch.nn.MultiheadAttention(128, 4, batch_first=True), torch.from_numpy(data(32, 64, 128))
    def run():
        with torch.no_grad(): mha(x, x, x, need_weights=True)
    return run

def pt_train_step(model_name):
    import torch
    nn = torch.nn
    if model_name == "mlp":
        model, x = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)), torch.from_numpy(data(128, 784))
    else:
        model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(32 * 7 * 7, 10))
        x = torch.from_numpy(data(128, 1, 28, 28))
    y, opt, loss_fn = torch.from_numpy(labels(128)), torch.optim.Adam(model.parameters(), lr=1e-3), nn.CrossEntropyLoss()
    def step():
        opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()
    return step

CASES = [  # (name, tinytorch builder, torch builder)
    ("matmul 512x512 @ 512x512",                  tt_matmul, pt_matmul),
    ("Linear forward (128, 784->256)",            tt_linear, pt_linear),
    ("Conv2d forward 64x3x32x32 -> 32, 3x3 pad 1",  lambda: tt_conv(3, 32, False), lambda: pt_conv(3, 32, False)),
    ("Conv2d fwd+bwd 64x3x32x32 -> 32",           lambda: tt_conv(3, 32, True), lambda: pt_conv(3, 32, True)),
    ("Conv2d forward 64x32x32x32 -> 64, 3x3 pad 1", lambda: tt_conv(32, 64, False), lambda: pt_conv(32, 64, False)),
    ("Conv2d fwd+bwd 64x32x32x32 -> 64",          lambda: tt_conv(32, 64, True), lambda: pt_conv(32, 64, True)),
    ("MaxPool2d(2) forward 64x32x32x32",          tt_maxpool, pt_maxpool),
    ("MultiHeadAttention fwd (32, 64, 128), 4 heads", tt_mha, pt_mha),
    ("MLP 784-256-10 train step (batch 128, Adam)", lambda: tt_train_step("mlp"), lambda: pt_train_step("mlp")),
    ("CNN train step conv16-pool-conv32-pool-linear", lambda: tt_train_step("cnn"), lambda: pt_train_step("cnn")),
]

def time_all(framework: str) -> dict:
    "Child process: time every case of one framework; JSON name -> ms, or an explanation."
    if framework == "torch":
        import torch
        torch.set_num_threads(os.cpu_count() or 1)
    results = {}
    for name, ours, theirs in CASES:
        try:
            results[name] = median_ms((ours if framework == "tinytorch" else theirs)())
        except (ImportError, AttributeError) as e:
            results[name] = f"skipped: {e}"
    return results

def run_child(framework: str) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", framework], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{framework} benchmarks crashed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])

def main():
    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    print(f"numpy {np.__version__}; torch {torch_version or 'not installed'}; {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f} (ratios are only meaningful on an idle machine)\n", flush=True)
    ours = run_child("tinytorch")
    theirs = run_child("torch") if torch_version else {}
    ratios = []
    for name, _, _ in CASES:
        mine, ref = ours[name], theirs.get(name)
        if isinstance(mine, str): print(f"{name:<48} {mine}"); continue
        line = f"{name:<48} tinytorch {mine:8.2f} ms"
        if isinstance(ref, float):
            ratio = mine / ref
            ratios.append((ratio, name))
            line += f"   torch {ref:8.2f} ms   ratio {ratio:5.2f}x {'✅' if ratio <= 2 else '❌'}"
        print(line, flush=True)
    if ratios:
        worst = max(ratios)
        within = sum(r <= 2 for r, _ in ratios)
        print(f"\n{within}/{len(ratios)} cases within 2x of PyTorch; worst {worst[0]:.2f}x ({worst[1]})")

if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(time_all(sys.argv[2])))
    else:
        main()
