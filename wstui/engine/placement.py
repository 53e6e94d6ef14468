"""Where a task runs: cores, torch and BLAS thread counts, the device, out-of-memory fallback,
and loading a tensor for the analyzers (DESIGN §7)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from analyzers.core import loaded_torch
from wstui.checkpoint.base import TensorRef


def cpu_count() -> int:
    """Cores this process may run on (affinity-aware)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def load_tensor(ref: TensorRef) -> Any:
    """The tensor for the analyzers, float32 on the CPU: a numpy array read without torch
    where the reader can (safetensors F32/F16/BF16/F64, GGUF), so that a CPU scan of those
    never imports torch (1.2-1.7 s); a torch tensor otherwise (`.bin`/`.pt`, FP8)."""
    array = getattr(ref.reader, "float32_array", None)
    if array is not None and ref.analyzable:
        out = array(ref)
        if out is not None:
            return out
    return ref.load("cpu")


def check_device(device: str) -> None:
    """Refuse a device this torch cannot use (one line, before any work starts)."""
    kind = device.split(":")[0]
    if kind == "cpu":
        return  # every torch has it: no import (a scan served from the cache needs no torch)
    import torch

    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available to this torch")
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ValueError(f"device {device!r}: MPS is not available to this torch")
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {device!r} (use auto, cpu, cuda or mps)")


class BlasThreads:
    """The thread count of the BLAS library numpy brings (OpenBLAS: one pool per process, unlike
    torch's per-thread setting), switched with threadpoolctl and restored when the job ends.
    Without threadpoolctl it does nothing. (No analyzer calls scipy's BLAS: importing
    scipy.linalg only to reach it cost 0.15 s of every fresh `wstui scan`.)"""

    def __init__(self) -> None:
        self._controller: Any = None
        self._original: Any = None
        self._current: int | None = None

    def set(self, n: int) -> None:
        if n == self._current:
            return
        try:
            if self._controller is None:
                import numpy  # noqa: F401  (loads its BLAS, so the controller sees it)
                from threadpoolctl import ThreadpoolController

                self._controller = ThreadpoolController()
                self._original = self._controller.info()
            self._controller.limit(limits=n, user_api="blas")
        except Exception:  # no threadpoolctl, or a BLAS it cannot drive: leave BLAS alone
            self._controller = False
        self._current = n

    def restore(self) -> None:
        if not self._controller or self._original is None or self._current is None:
            return
        try:
            for lib, info in zip(self._controller.lib_controllers, self._original):
                if info.get("user_api") == "blas":
                    lib.set_num_threads(info["num_threads"])
        except Exception:
            pass
        self._current = None


def warm_up_linalg(device: str) -> None:
    """Load torch's GPU linear-algebra backend once, from one thread: its lazy loader raises
    "lazy wrapper should be called at most once" when worker threads race to the first call
    (seen on an H200: 15 of 57 demo tensors failed their spectral analysis in a fresh process)."""
    try:
        import torch

        eye = torch.eye(2, device=device)
        torch.linalg.eigvalsh(eye)
        torch.linalg.svdvals(eye)
    except Exception:  # no usable device: the workers report it per tensor
        pass


def matrix_sizes(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    """(values, small side, large side) of a tensor seen as a (shape[0], -1) matrix, the
    small side being its Gram matrix's size; None for fewer than two dims."""
    if len(shape) < 2:
        return None
    rows = int(shape[0])
    cols = 1
    for s in shape[1:]:
        cols *= int(s)
    return rows * cols, min(rows, cols), max(rows, cols)


#: Below this size of the Gram matrix numpy's eigvalsh (OpenBLAS's reference LAPACK) is as
#: fast as torch's (MKL); above it MKL's is faster, by a time that grows as n³ (2 cores, one
#: thread: n = 896 1.00x, 1536 1.91x, 2048 2.12x, 4096 2.36x: 4.0-4.2e-11 s x n³ saved).
TORCH_EIGH_SAVES_S_PER_N3 = 4.0e-11
#: ... so torch is imported for a scan only when that saving is at least twice the import.
TORCH_IMPORT_S = 1.5


def torch_eigvalsh_pays(shapes: Iterable[tuple[int, ...]]) -> bool:
    """Whether the spectra of these matrices save more with MKL's eigvalsh (through torch)
    than `import torch` costs: twice the import, estimated from the Gram matrices' sizes."""
    from analyzers.spectral import TORCH_EIGH_MIN

    saved = 0.0
    for shape in shapes:
        sizes = matrix_sizes(shape)
        if sizes is not None and sizes[1] >= TORCH_EIGH_MIN:
            saved += TORCH_EIGH_SAVES_S_PER_N3 * float(sizes[1]) ** 3
    return saved >= 2 * TORCH_IMPORT_S


def import_torch_for_eigvalsh(shapes: Iterable[tuple[int, ...]]) -> bool:
    """Import torch now, before the workers start, when its eigvalsh pays for the import
    (`torch_eigvalsh_pays`); the spectral analyzer uses it once loaded. True if loaded."""
    if loaded_torch() is not None:
        return True
    if not torch_eigvalsh_pays(shapes):
        return False
    try:
        import torch  # noqa: F401
    except Exception:  # no usable torch: numpy's eigvalsh does it, slower
        return False
    return True


def set_threads(n: int) -> None:
    """torch's intra-op threads for the calling thread (OpenMP/MKL keep them per thread);
    nothing to set while torch is not loaded (numpy's BLAS threads are `BlasThreads`)."""
    torch = loaded_torch()
    if torch is None:
        return
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def is_oom(message: str | None) -> bool:
    if not message:
        return False
    low = message.lower()
    return "outofmemory" in low or "out of memory" in low


def to_device(x: Any, device: str) -> tuple[Any, str]:
    """`x` (torch or numpy) on `device`, or left on the CPU when the device is out of memory."""
    if not hasattr(x, "to"):  # a numpy array
        import torch

        x = torch.from_numpy(x)
    try:
        return x.to(device), device
    except Exception as exc:
        if is_oom(f"{type(exc).__name__}: {exc}"):
            empty_cache()
            return x, "cpu"
        raise


def to_cpu(x: Any) -> tuple[Any, str]:
    y = x.to("cpu")
    del x
    empty_cache()
    return y, "cpu"


def empty_cache() -> None:
    torch = loaded_torch()
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


_trim: Any = None


def release_freed_memory() -> None:
    """Hand the heap's freed pages back to the system (glibc's `malloc_trim`; elsewhere
    nothing happens).

    Why: glibc raises its memory-map threshold whenever a mapped block is freed, so the few-MiB
    activations and gradients of a backward pass come from the heap, whose freed space glibc
    keeps. On SmolLM2-135M the study's forward+backward left RSS 800 MB above what was live.
    Called before each decoder block, it cut the pass's peak RSS from 1.78 to 1.51 GB for
    0.1-0.4 s of 6 s (a fixed 2 MiB map threshold saved as much but cost 30% of the study)."""
    global _trim
    if _trim is None:
        _trim = False
        try:
            import ctypes
            import ctypes.util

            name = ctypes.util.find_library("c")
            if name and "libc.so" in name:
                _trim = ctypes.CDLL(name).malloc_trim
        except (OSError, AttributeError):  # not glibc: its allocator, its policy
            pass
    if _trim:
        _trim(0)
