"TinyTorch: a deep-learning framework built from scratch in NumPy, one notebook per module (nbs/)."
import os as _os

# OpenBLAS keeps its idle threads spinning for about 0.1 s after every matrix product. On a 2-core
# machine that spin takes the core TinyTorch's own copy threads need (nbs/06_spatial.ipynb, "Both
# cores for the copies"); with the threads told to sleep at once, a CIFAR-10 training step runs about
# 10% faster. OpenBLAS reads this only when NumPy loads it, so it must be set before NumPy is
# imported: importing tinytorch first does that. A value you set yourself is kept.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"
