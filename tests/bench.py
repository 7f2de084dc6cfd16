"""`make bench`: TinyTorch speed against PyTorch CPU on the same machine, two ways.

1. **Separate processes.** Each framework times every case in its own child process (median of 15
   calls after 3 warm-ups), so PyTorch's OpenMP threads and NumPy's BLAS threads never share a process.
2. **Interleaved.** One process builds both frameworks' cases and alternates short rounds
   (TinyTorch, PyTorch, TinyTorch, ...). Each round gives one ratio; the table shows the median of
   those ratios. Anything else running on the machine then slows both sides of a ratio alike, which
   makes this the steadier number on a shared machine. In that shared process both thread pools
   are told to sleep when idle (OMP_WAIT_POLICY=PASSIVE, OPENBLAS_THREAD_TIMEOUT=4), so neither
   framework's spinning threads slow the other.

In both modes every child keeps freed memory for reuse (glibc's tunables; TinyTorch does this itself
when imported), so neither framework pays the kernel for fresh pages on every call. `--malloc default`
leaves glibc as it comes; see KEEP_FREED_MEMORY below.

Every case also gets a roofline column: its GFLOP/s (the floating-point work of the case, counted by
hand below, divided by TinyTorch's median time) and that rate as a percentage of this machine's
matmul peak, measured first as the best of a few large float32 NumPy matmuls.

The run prints the load average before and after and the share of the CPU other processes used
while it ran, and warns when that makes the ratios unreliable. Not a test: timings never gate CI.
A case whose modules are not built yet says why and is skipped.

    python tests/bench.py [--mode both|separate|interleaved] [--rounds N] [--threads N] [--malloc keep|default]
    python tests/bench.py --floor    # the GEMM floor under the 32->64 convolution (see gemm_floor)

`--threads 1` pins both frameworks to one thread: a fairer comparison on a busy machine, where a
multi-threaded BLAS call waits for whichever of its threads the scheduler set aside.
"""
import argparse, json, os, subprocess, sys, time, statistics
if "--threads" in sys.argv:   # must be set before NumPy loads its BLAS; child processes inherit it
    n = sys.argv[sys.argv.index("--threads") + 1]
    os.environ.update(OPENBLAS_NUM_THREADS=n, OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, TINYTORCH_BENCH_THREADS=n)
import tinytorch   # before NumPy, as a TinyTorch script starts: its OpenBLAS setting applies only then (tinytorch/__init__.py)
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

# The floating-point work of each case, counted by hand: a multiply-add is 2 FLOPs; a convolution's
# backward is two more GEMMs of the forward's size (weight gradient, input gradient); a comparison in
# max pooling counts as one.
def conv_flops(n, c, h, w, f, k=3, pad=1):
    return 2 * n * f * (h + 2 * pad - k + 1) * (w + 2 * pad - k + 1) * c * k * k

MLP_FWD = 2 * 128 * (784 * 256 + 256 * 10)
CNN_FWD = conv_flops(128, 1, 28, 28, 16) + conv_flops(128, 16, 14, 14, 32) + 2 * 128 * 32 * 7 * 7 * 10
CASES = [  # (name, tinytorch builder, torch builder, FLOPs per call)
    ("matmul 512x512 @ 512x512",                  tt_matmul, pt_matmul, 2 * 512 ** 3),
    ("Linear forward (128, 784->256)",            tt_linear, pt_linear, 2 * 128 * 784 * 256),
    ("Conv2d forward 64x3x32x32 -> 32, 3x3 pad 1",  lambda: tt_conv(3, 32, False), lambda: pt_conv(3, 32, False),
     conv_flops(64, 3, 32, 32, 32)),
    ("Conv2d fwd+bwd 64x3x32x32 -> 32",           lambda: tt_conv(3, 32, True), lambda: pt_conv(3, 32, True),
     3 * conv_flops(64, 3, 32, 32, 32)),
    ("Conv2d forward 64x32x32x32 -> 64, 3x3 pad 1", lambda: tt_conv(32, 64, False), lambda: pt_conv(32, 64, False),
     conv_flops(64, 32, 32, 32, 64)),
    ("Conv2d fwd+bwd 64x32x32x32 -> 64",          lambda: tt_conv(32, 64, True), lambda: pt_conv(32, 64, True),
     3 * conv_flops(64, 32, 32, 32, 64)),
    ("MaxPool2d(2) forward 64x32x32x32",          tt_maxpool, pt_maxpool, 64 * 32 * 16 * 16 * 4),
    ("MultiHeadAttention fwd (32, 64, 128), 4 heads", tt_mha, pt_mha,
     4 * 2 * 32 * 64 * 128 * 128 + 2 * 2 * 32 * 64 * 64 * 128),
    # backward: weight gradients of both layers, input gradient of the second only
    ("MLP 784-256-10 train step (batch 128, Adam)", lambda: tt_train_step("mlp"), lambda: pt_train_step("mlp"),
     MLP_FWD * 2 + 2 * 128 * 256 * 10),
    ("CNN train step conv16-pool-conv32-pool-linear", lambda: tt_train_step("cnn"), lambda: pt_train_step("cnn"),
     CNN_FWD * 3 - conv_flops(128, 1, 28, 28, 16)),
]
# the targets for TinyTorch / PyTorch; every other case must stay within 2x
TARGETS = {"matmul 512x512 @ 512x512": 1.1, "Conv2d fwd+bwd 64x32x32x32 -> 64": 1.5,
           "MLP 784-256-10 train step (batch 128, Adam)": 1.5, "CNN train step conv16-pool-conv32-pool-linear": 1.5}
def target(name): return TARGETS.get(name, 2.0)

def matmul_peak_gflops(n: int = 1024, tries: int = 10) -> float:
    "This machine's float32 matmul rate through NumPy's BLAS: the best of a few n×n products."
    a, b = data(n, n), data(n, n, seed=1)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(tries))
    return 2 * n ** 3 / best / 1e9

def _timed(fn) -> float:
    t0 = time.perf_counter(); fn(); return time.perf_counter() - t0

def threads() -> int: return int(os.environ.get("TINYTORCH_BENCH_THREADS") or os.cpu_count() or 1)

def set_torch_threads():
    import torch
    torch.set_num_threads(threads())

def time_all(framework: str) -> dict:
    "Child process: time every case of one framework; JSON name -> ms, or an explanation."
    if framework == "torch": set_torch_threads()
    results = {}
    for name, ours, theirs, _ in CASES:
        try:
            results[name] = median_ms((ours if framework == "tinytorch" else theirs)())
        except (ImportError, AttributeError) as e:
            results[name] = f"skipped: {e}"
    return results

# Two thread pools in one process take turns only if neither spins on the cores while idle: by default
# PyTorch's OpenMP threads and OpenBLAS's threads keep spinning for a while after each call, which
# would charge one framework for the other's idle threads. The interleaved child makes both sleep.
SHARED_PROCESS_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "4"}

# Memory. glibc gives a large freed buffer back to the kernel, and the next one costs a page fault per
# page on first touch. TinyTorch asks glibc to keep freed memory when it is imported (module 02,
# `keep_freed_memory`); PyTorch does not, and in a fresh process that halved its forward convolutions
# here (the 32->64 case took 24-26 ms, against 12 ms with freed memory kept). So every child keeps
# freed memory through glibc's tunables, which gives PyTorch the same: blocks up to glibc's 32 MiB
# maximum come from its heap, and nothing is trimmed below 1 GiB. `--malloc default` leaves glibc's
# defaults (TinyTorch still keeps its memory).
KEEP_FREED_MEMORY = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"

def child_env(framework: str, malloc: str = "keep") -> dict:
    env = dict(os.environ, **(SHARED_PROCESS_ENV if framework in ("interleaved", "floor") else {}))
    if malloc == "keep":
        env["GLIBC_TUNABLES"] = ":".join(filter(None, (env.get("GLIBC_TUNABLES"), KEEP_FREED_MEMORY)))
    return env

def run_child(framework: str, rounds: int = 0, malloc: str = "keep") -> dict:
    "Time one framework (or, for 'interleaved', both) in a fresh process; returns its JSON result."
    env = child_env(framework, malloc)
    proc = subprocess.run([sys.executable, __file__, "--child", framework, str(rounds)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{framework} benchmarks crashed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])

def interleaved(rounds: int, calls: int = 3) -> dict:
    "Both frameworks in this process, alternating rounds of `calls` timed calls; name -> (ms ours, ms theirs, median ratio)."
    set_torch_threads()
    out = {}
    for name, ours, theirs, _ in CASES:
        try: fns = (ours(), theirs())
        except (ImportError, AttributeError) as e:
            out[name] = f"skipped: {e}"; continue
        for fn in fns: fn(); fn()                     # warm-up: allocator, BLAS threads, caches
        times, ratios = ([], []), []
        for r in range(rounds):
            pair = []
            for side in ((0, 1) if r % 2 == 0 else (1, 0)):   # alternate who goes first
                fns[side]()                                  # one untimed call hands the cores over
                t = statistics.median(_timed(fns[side]) for _ in range(calls))
                times[side].append(t); pair.append((side, t))
            t_ours, t_theirs = dict(pair)[0], dict(pair)[1]
            ratios.append(t_ours / t_theirs)
        out[name] = (statistics.median(times[0]) * 1e3, statistics.median(times[1]) * 1e3, statistics.median(ratios))
    return out

# ---- the floor under the 32->64 convolution ----
CONV_F, CONV_K, CONV_P = 64, 32 * 9, 64 * 32 * 32      # filters; rows of im2col (C·3·3); columns (N·H·W)

def gemm_floor(repeats: int = 15) -> dict:
    """Child process: the three GEMMs of "Conv2d fwd+bwd 64x32x32x32 -> 64" alone, at their exact shapes, and
    PyTorch's whole forward and backward of that case in the same process. Any convolution built on
    im2col and NumPy's BLAS pays at least the GEMMs. Each GEMM writes into a reused buffer (no fresh
    memory) and runs on full-size operands and on blocks of 4,096 columns that stay in cache. Also
    times the 16 small GEMMs (K = 32) that a Winograd F(2x2, 3x3) forward would run instead of the
    forward GEMM. Returns name -> ms."""
    F, K, P, B = CONV_F, CONV_K, CONV_P, 4096
    w, cols, grad = data(F, K), data(K, P, seed=1), data(F, P, seed=2)
    out, dcols = np.empty((F, P), np.float32), np.empty((K, P), np.float32)
    def three(c, g, o, d):
        return {"forward: weights (64x288) @ cols (288xP)": lambda: np.matmul(w, c, out=o),
                "weight gradient: cols @ grad.T (288x64)": lambda: c @ g.T,
                "input gradient: weights.T (288x64) @ grad": lambda: np.matmul(w.T, g, out=d)}
    result = {f"{name} [full]": median_ms(fn, repeats) for name, fn in three(cols, grad, out, dcols).items()}
    blocks = P // B                                      # the same work as `blocks` in-cache GEMMs
    small = three(cols[:, :B].copy(), grad[:, :B].copy(), out[:, :B].copy(), dcols[:, :B].copy())
    result.update({f"{name} [in cache]": blocks * median_ms(fn, 4 * repeats) for name, fn in small.items()})
    tiles = P // 4                                       # one 4x4 input tile per 2x2 output block
    U, V = data(16, F, 32, seed=3), data(16, 32, tiles, seed=4)
    Ut, Vt = np.ascontiguousarray(U.transpose(0, 2, 1)), np.ascontiguousarray(V.transpose(0, 2, 1))
    result["Winograd forward: 16 GEMMs (64x32) @ (32xP/4)"] = min(median_ms(lambda: U @ V, repeats),
                                                                 median_ms(lambda: Vt @ Ut, repeats))
    try:
        set_torch_threads()
        result["torch"] = median_ms(pt_conv(32, 64, True), repeats)
    except ImportError:
        pass
    return result

def print_floor(result: dict) -> None:
    flops = 2 * CONV_F * CONV_K * CONV_P
    print("\n== the GEMM floor of Conv2d fwd+bwd 64x32x32x32 -> 64 (NumPy BLAS, reused output buffers) ==")
    for name, ms in result.items():
        if name != "torch" and not name.startswith("Winograd"):
            print(f"{name:<58} {ms:7.2f} ms  {flops / ms / 1e6:6.1f} GFLOP/s")
    torch_ms = result.get("torch")
    for where in ("full", "in cache"):
        total = sum(ms for name, ms in result.items() if name.endswith(f"[{where}]"))
        line = f"three GEMMs, {where:<8}: {total:7.2f} ms"
        if torch_ms: line += f"  = {total / torch_ms:.2f}x PyTorch's whole forward and backward ({torch_ms:.2f} ms)"
        print(line)
    wino = result["Winograd forward: 16 GEMMs (64x32) @ (32xP/4)"]
    fwd = result["forward: weights (64x288) @ cols (288xP) [full]"]
    print(f"Winograd F(2x2,3x3) forward: its 16 GEMMs alone take {wino:.2f} ms ({flops / 2.25 / wino / 1e6:.1f} GFLOP/s) "
          f"for 2.25x fewer multiplications, against {fwd:.2f} ms for im2col's one forward GEMM, before any transform")

class CpuWatch:
    "How much CPU time other processes took while we ran, from /proc/stat minus our own CPU time."
    def __init__(self):
        self.start_load = os.getloadavg()[0]
        self.busy0, self.own0, self.t0 = self._busy(), self._own(), time.perf_counter()

    @staticmethod
    def _busy():
        try:
            with open('/proc/stat') as f: fields = [int(v) for v in f.readline().split()[1:]]
        except OSError: return None
        return (sum(fields) - fields[3] - fields[4]) / os.sysconf('SC_CLK_TCK')   # all but idle and iowait, seconds

    @staticmethod
    def _own():
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def others_share(self):
        "Fraction of the machine's CPU capacity that other processes used since we started (None off Linux)."
        busy = self._busy()
        if busy is None or self.busy0 is None: return None
        wall = time.perf_counter() - self.t0
        return max(0.0, (busy - self.busy0) - (self._own() - self.own0)) / (wall * (os.cpu_count() or 1))

def load_warning(load: float) -> str:
    cores = os.cpu_count() or 1
    return (f"  WARNING: load average {load:.1f} on {cores} cores: other processes compete for the CPU, so these "
            f"timings are unreliable; the interleaved ratios suffer least. Rerun on an idle machine."
            if load > 0.5 else "")

def roofline(name, flops, ms, peak) -> str:
    rate = flops / (ms / 1e3) / 1e9
    return f"{rate:7.1f} GFLOP/s {100 * rate / peak:5.1f}%"

def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument("--mode", choices=("both", "separate", "interleaved"), default="both")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds per case (default 9)")
    parser.add_argument("--threads", type=int, default=None, help="BLAS/OpenMP threads for both (default: all cores)")
    parser.add_argument("--malloc", choices=("keep", "default"), default="keep",
                        help="keep freed memory for reuse in every child (default), or glibc's defaults")
    parser.add_argument("--floor", action="store_true",
                        help="instead of the cases: the GEMM floor of the im2col convolution (see gemm_floor)")
    args = parser.parse_args()
    try:   # the version without importing torch: its threads must not start in this process
        from importlib.metadata import version, PackageNotFoundError
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = None
    watch = CpuWatch()
    print(f"numpy {np.__version__}; torch {torch_version or 'not installed'}; {os.cpu_count()} cores, {threads()} threads; "
          f"load average {watch.start_load:.2f} at start; freed memory kept for reuse: "
          f"{'both frameworks' if args.malloc == 'keep' else 'TinyTorch only (--malloc default)'}", flush=True)
    if warning := load_warning(watch.start_load): print(warning)
    peak = matmul_peak_gflops()
    print(f"matmul peak (best of 10 float32 1024x1024 NumPy matmuls): {peak:.1f} GFLOP/s; the roofline column is "
          f"TinyTorch's rate as a share of it (measured again at the end; a busy machine underestimates it)", flush=True)
    if args.floor:
        print_floor(run_child("floor", malloc=args.malloc)); return
    flops = {name: f for name, _, _, f in CASES}
    verdicts = {}
    if args.mode in ("both", "separate"):
        print("\n== separate processes (median of 15 calls each; ratio = TinyTorch / PyTorch) ==")
        ours = run_child("tinytorch", malloc=args.malloc)
        theirs = run_child("torch", malloc=args.malloc) if torch_version else {}
        for name, *_ in CASES:
            mine, ref = ours[name], theirs.get(name)
            if isinstance(mine, str): print(f"{name:<48} {mine}"); continue
            line = f"{name:<48} tinytorch {mine:8.2f} ms"
            if isinstance(ref, float):
                ratio = mine / ref
                verdicts.setdefault(name, []).append(ratio)
                line += f"  torch {ref:8.2f} ms  ratio {ratio:5.2f}x {'ok ' if ratio <= target(name) else 'SLOW'}"
            print(line + f"  {roofline(name, flops[name], mine, peak)}", flush=True)
    if args.mode in ("both", "interleaved") and torch_version:
        print(f"\n== interleaved in one process ({args.rounds} alternating rounds; ratio = median of the rounds' ratios; "
              "idle threads of both sleep) ==")
        for name, result in run_child("interleaved", args.rounds, args.malloc).items():
            if isinstance(result, str): print(f"{name:<48} {result}"); continue
            mine, ref, ratio = result
            verdicts.setdefault(name, []).append(ratio)
            print(f"{name:<48} tinytorch {mine:8.2f} ms  torch {ref:8.2f} ms  ratio {ratio:5.2f}x "
                  f"{'ok ' if ratio <= target(name) else 'SLOW'}  {roofline(name, flops[name], mine, peak)}", flush=True)
    end_peak = matmul_peak_gflops()
    if end_peak > 1.2 * peak:
        print(f"\nmatmul peak measured again at the end: {end_peak:.1f} GFLOP/s; the roofline shares above were "
              f"computed with {peak:.1f} and overstate by {end_peak / peak:.1f}x")
    end_load, others = os.getloadavg()[0], watch.others_share()
    print(f"\nload average {watch.start_load:.2f} at start, {end_load:.2f} at end"
          + (f"; other processes used {100 * others:.0f}% of the CPU during the run" if others is not None else ""))
    if others is not None and others > 0.1:
        print(f"  WARNING: other processes used {100 * others:.0f}% of the CPU while this ran: the timings are "
              "unreliable; rerun on an idle machine.")
    if verdicts:
        met = [n for n, rs in verdicts.items() if max(rs) <= target(n)]
        print(f"{len(met)}/{len(verdicts)} cases meet their target (1.1x matmul; 1.5x conv fwd+bwd 32->64, MLP and CNN "
              f"train steps; 2x the rest) in every mode run")
        for n, rs in verdicts.items():
            if n not in met: print(f"  over target: {n} ({', '.join(f'{r:.2f}x' for r in rs)} > {target(n)}x)")

if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        kind, rounds = sys.argv[2], int(sys.argv[3])
        print(json.dumps(interleaved(rounds) if kind == "interleaved" else gemm_floor() if kind == "floor"
                         else time_all(kind)))
    else:
        main()
