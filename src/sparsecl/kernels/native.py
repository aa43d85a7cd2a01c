"""Build, cache and call the native CPU kernels (``native_kernels.c``, package data) through ctypes.

Nothing happens at import. The first call to :func:`native_kernels` compiles the source with the system C
compiler (``gcc -O3 -march=native -fopenmp``, about 0.3 s) into
``$XDG_CACHE_HOME/sparsecl/kernels/spk-<hash>.so`` (``~/.cache`` by default), where the hash covers the
source, the flags, the compiler's version and the CPU's feature flags, so a different machine or
compiler never loads a stale binary. Any failure (no compiler, compile error, unloadable library) is
reported once as a warning and :func:`native_kernels` returns None: callers then use the torch backend.
No build step is added to installation.

ctypes releases the GIL during the calls; the kernels only read/write the pointers they are given, so
the wrappers check dtype, device, contiguity and shapes before every call.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import torch

C_SOURCE = (resources.files("sparsecl.kernels") / "native_kernels.c").read_text()  # what the cache key hashes

FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11")
_P, _I64, _INT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int


class NativeBuildError(RuntimeError):
    """The native kernels could not be compiled or loaded."""


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sparsecl" / "kernels"


def _cpu_signature() -> str:
    """The CPU's feature flags (what -march=native compiles for), or the platform name as a fallback."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.machine() + platform.processor()


def _compiler_version(compiler: str) -> str:
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        raise NativeBuildError(f"C compiler {compiler!r} not usable: {e}") from None
    return out.stdout.splitlines()[0] if out.returncode == 0 and out.stdout else compiler


def build_native(cache_dir: Path, compiler: str) -> Path:
    """Compile (or find in the cache) the shared library; returns its path or raises NativeBuildError."""
    key = hashlib.sha256(
        "\n".join([C_SOURCE, " ".join(FLAGS), _compiler_version(compiler), _cpu_signature()]).encode()
    ).hexdigest()[:16]
    lib = cache_dir / f"spk-{key}.so"
    if lib.exists():
        return lib
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        src, out = Path(tmp) / "spk.c", Path(tmp) / "spk.so"
        src.write_text(C_SOURCE)
        try:
            res = subprocess.run([compiler, *FLAGS, str(src), "-o", str(out)], capture_output=True, text=True,
                                 timeout=300)
        except (OSError, subprocess.SubprocessError) as e:
            raise NativeBuildError(f"compiling native kernels failed: {e}") from None
        if res.returncode != 0:
            raise NativeBuildError(f"compiling native kernels failed: {res.stderr.strip()[:500]}")
        os.replace(out, lib)  # atomic: concurrent builders never see a half-written library
    return lib


class NativeKernels:
    """Typed wrappers of the C kernels (float32 values/operands, int32 CSR indices, CPU)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._spmm = lib.spk_spmm_t
        self._spmm.argtypes = [_I64, _P, _P, _P, _P, _I64, _P, _P, _INT]
        self._spmm.restype = None
        self._sddmm = lib.spk_sddmm_t
        self._sddmm.argtypes = [_I64, _P, _P, _P, _P, _I64, _P, _INT]
        self._sddmm.restype = None
        self._conv = lib.spk_conv_t
        self._conv.argtypes = [_I64, _I64, _I64, _I64, _I64, _P, _P, _P, _P, _I64, _P, _P, _INT]
        self._conv.restype = None
        self._conv_sddmm = lib.spk_conv_sddmm_t
        self._conv_sddmm.argtypes = [_I64, _I64, _I64, _I64, _I64, _P, _P, _P, _I64, _I64, _P, _I64, _P, _INT]
        self._conv_sddmm.restype = None
        self._conv_scatter = lib.spk_conv_scatter_t
        self._conv_scatter.argtypes = [_I64, _I64, _I64, _I64, _I64, _I64, _P, _P, _P, _P, _P, _I64, _P, _INT]
        self._conv_scatter.restype = None
        self._transpose = lib.spk_transpose
        self._transpose.argtypes = [_I64, _I64, _P, _P, _INT]
        self._transpose.restype = None
        self._to_planes = lib.spk_to_planes
        self._to_planes.argtypes = [_I64, _I64, _I64, _I64, _I64, _I64, _I64, _P, _P, _INT]
        self._to_planes.restype = None
        self._from_planes = lib.spk_from_planes
        self._from_planes.argtypes = [_I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _I64, _P, _P, _INT]
        self._from_planes.restype = None
        self._linear_fwd = lib.spk_linear_fwd
        self._linear_fwd.argtypes = [_I64, _I64, _I64, _P, _P, _P, _P, _P, _P, _P, _P, _P, _INT]
        self._linear_fwd.restype = None
        self._linear_bwd = lib.spk_linear_bwd
        self._linear_bwd.argtypes = [_I64, _I64, _I64, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _P, _INT]
        self._linear_bwd.restype = None

    @staticmethod
    def _check(crow: torch.Tensor, col: torch.Tensor, *dense: torch.Tensor) -> None:
        for t in (crow, col):
            if t.dtype != torch.int32 or not t.is_contiguous() or t.device.type != "cpu":
                raise ValueError("native kernels need contiguous int32 CPU index arrays")
        NativeKernels._check_dense(*dense)

    @staticmethod
    def _check_dense(*dense: torch.Tensor) -> None:
        for t in dense:
            if t.dtype != torch.float32 or not t.is_contiguous() or t.device.type != "cpu":
                raise ValueError("native kernels need contiguous float32 CPU tensors")

    def spmm_t(self, crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, x_t: torch.Tensor,
               bias: torch.Tensor | None) -> torch.Tensor:
        """``y_t [rows, B] = W x_t (+ bias[:, None])`` for CSR ``W`` [rows, x_t.shape[0]]."""
        rows, batch = crow.numel() - 1, x_t.shape[1]
        self._check(crow, col, values, x_t, *(() if bias is None else (bias,)))
        if col.numel() != values.numel() or (bias is not None and bias.numel() != rows):
            raise ValueError("values/bias do not match the CSR structure")
        y_t = torch.empty(rows, batch, dtype=torch.float32)
        self._spmm(rows, crow.data_ptr(), col.data_ptr(), values.data_ptr(), x_t.data_ptr(), batch,
                   None if bias is None else bias.data_ptr(), y_t.data_ptr(), torch.get_num_threads())
        return y_t

    def sddmm_t(self, crow: torch.Tensor, col: torch.Tensor, gy_t: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        """``g[k] = <gy_t[row k], x_t[col k]>`` for every nonzero k (both operands [*, B])."""
        rows, batch = crow.numel() - 1, x_t.shape[1]
        self._check(crow, col, gy_t, x_t)
        if gy_t.shape != (rows, batch):
            raise ValueError(f"gy_t shape {tuple(gy_t.shape)} != {(rows, batch)}")
        g = torch.empty(col.numel(), dtype=torch.float32)
        self._sddmm(rows, crow.data_ptr(), col.data_ptr(), gy_t.data_ptr(), x_t.data_ptr(), batch, g.data_ptr(),
                    torch.get_num_threads())
        return g

    def transpose(self, a: torch.Tensor) -> torch.Tensor:
        """``a.t()`` as a contiguous tensor: free (a view) when ``a`` is itself the transpose view of a
        contiguous tensor, the native blocked kernel for a contiguous float32 CPU ``a``, else torch's copy."""
        if a.dim() != 2:
            raise ValueError(f"transpose needs a 2-D tensor, got shape {tuple(a.shape)}")
        a_t = a.t()
        if a_t.is_contiguous():
            return a_t
        if a.dtype != torch.float32 or a.device.type != "cpu" or not a.is_contiguous():
            return a_t.contiguous()
        out = torch.empty(a.shape[1], a.shape[0], dtype=torch.float32)
        self._transpose(a.shape[0], a.shape[1], a.data_ptr(), out.data_ptr(), torch.get_num_threads())
        return out

    # ------------------------------------------------------------------ fused sparse linear (training)
    # No argument checks: the caller (``execution.FusedCsrLinear``) verified the structure, the flat
    # indices and the weight once per structure; operands are made contiguous here.
    def linear_fwd(self, s: Any, flat: torch.Tensor, w: torch.Tensor, x: torch.Tensor,
                   bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y [B, out], x^T [in, B])`` with ``y = x W^T + bias``, W's active values read from the dense
        ``w`` at ``flat`` (int64 row-major positions, CSR order)."""
        (out_f, in_f), batch = s.shape, x.shape[0]
        if x.t().is_contiguous():  # already batch-innermost (e.g. the transpose view of a product)
            x_t, x_ptr = x.t(), None
        else:
            x = x.contiguous()
            x_t, x_ptr = torch.empty(in_f, batch, dtype=torch.float32), x.data_ptr()
        y_t = torch.empty(out_f, batch, dtype=torch.float32)
        y = torch.empty(batch, out_f, dtype=torch.float32)
        self._linear_fwd(out_f, in_f, batch, s.crow.data_ptr(), s.col.data_ptr(), flat.data_ptr(),
                         w.data_ptr(), x_ptr, x_t.data_ptr(), None if bias is None else bias.data_ptr(),
                         y_t.data_ptr(), y.data_ptr(), torch.get_num_threads())
        return y, x_t

    def linear_bwd(self, s: Any, flat: torch.Tensor, t_flat: torch.Tensor, w: torch.Tensor, gy: torch.Tensor,
                   x_t: torch.Tensor, need_x: bool, need_w: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(gx [B, in] | None, gw [out, in] | None)``: gw dense, zero outside the active positions."""
        (out_f, in_f), batch = s.shape, gy.shape[0]
        gy = gy.contiguous()
        gy_t = torch.empty(out_f, batch, dtype=torch.float32)
        gw = torch.empty(out_f, in_f, dtype=torch.float32) if need_w else None
        gx_t = torch.empty(in_f, batch, dtype=torch.float32) if need_x else None
        gx = torch.empty(batch, in_f, dtype=torch.float32) if need_x else None
        ptr = (lambda t: None if t is None else t.data_ptr())
        self._linear_bwd(out_f, in_f, batch, s.crow.data_ptr(), s.col.data_ptr(), flat.data_ptr(),
                         s.t_crow.data_ptr(), s.t_col.data_ptr(), t_flat.data_ptr(), w.data_ptr(), gy.data_ptr(),
                         gy_t.data_ptr(), x_t.data_ptr(), ptr(gw), ptr(gx_t), ptr(gx), torch.get_num_threads())
        return gx, gw

    # ------------------------------------------------------------------ direct sparse convolution
    def to_planes(self, x: torch.Tensor, pad: tuple[int, int], np_: int) -> torch.Tensor:
        """[N, C, H, W] -> batch-innermost [C, H + 2 ph, W + 2 pw, Np]: zero border, zero lanes N..Np-1."""
        x = x.detach().contiguous()
        self._check_dense(x)
        if x.dim() != 4:
            raise ValueError(f"to_planes needs [N, C, H, W], got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        if np_ < n or min(pad) < 0:
            raise ValueError(f"planes need Np >= N and padding >= 0, got Np={np_}, N={n}, pad={pad}")
        planes = torch.empty(c, h + 2 * pad[0], w + 2 * pad[1], np_, dtype=torch.float32)
        self._to_planes(n, c, h, w, pad[0], pad[1], np_, x.data_ptr(), planes.data_ptr(), torch.get_num_threads())
        return planes

    def from_planes(self, planes: torch.Tensor, n: int, crop: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        """[C, Hs, Ws, Np] -> contiguous [N, C, H, W]: the first n batch lanes of the window
        ``crop = (oh, ow, H, W)`` (default: all of it)."""
        self._check_dense(planes)
        if planes.dim() != 4:
            raise ValueError(f"from_planes needs [C, H, W, Np], got shape {tuple(planes.shape)}")
        c, hs, ws, np_ = planes.shape
        oh, ow, h, w = crop if crop is not None else (0, 0, hs, ws)
        if n > np_ or min(oh, ow) < 0 or oh + h > hs or ow + w > ws:
            raise ValueError(f"{n} images, window {(oh, ow, h, w)} asked from planes {tuple(planes.shape)}")
        y = torch.empty(n, c, h, w, dtype=torch.float32)
        self._from_planes(n, c, h, w, hs, ws, oh, ow, np_, planes.data_ptr(), y.data_ptr(), torch.get_num_threads())
        return y

    @staticmethod
    def _check_planes(t: torch.Tensor) -> None:
        if t.dim() != 4 or t.shape[3] % 16:
            raise ValueError(f"conv operands must be [C, H, W, Np] with Np % 16 == 0, got {tuple(t.shape)}")

    def conv_t(self, crow: torch.Tensor, off: torch.Tensor, values: torch.Tensor, inp: torch.Tensor,
               out_hw: tuple[int, int], bias: torch.Tensor | None, stride: int = 1) -> torch.Tensor:
        """``out [rows, Ho, Wo, Np]``: sparse convolution with ``stride`` of the padded ``inp [C, Hp, Wp, Np]``.

        Every offset must satisfy off + S(Ho-1)*Wp + S(Wo-1) < C*Hp*Wp (the caller's geometry guarantees it).
        """
        self._check(crow, off, values, inp, *(() if bias is None else (bias,)))
        self._check_planes(inp)
        (ho, wo), rows, np_ = out_hw, crow.numel() - 1, inp.shape[3]
        if stride < 1 or stride * (ho - 1) >= inp.shape[1] or stride * (wo - 1) >= inp.shape[2] \
                or off.numel() != values.numel():
            raise ValueError("conv geometry does not match the operands")
        out = torch.empty(rows, ho, wo, np_, dtype=torch.float32)
        self._conv(rows, ho, wo, inp.shape[2], stride, crow.data_ptr(), off.data_ptr(), values.data_ptr(),
                   inp.data_ptr(), np_, None if bias is None else bias.data_ptr(), out.data_ptr(), torch.get_num_threads())
        return out

    def conv_scatter_t(self, crow: torch.Tensor, src: torch.Tensor, dst: torch.Tensor, values: torch.Tensor,
                       gy: torch.Tensor, frame: tuple[int, int], stride: int) -> torch.Tensor:
        """Input gradient of a strided convolution in the padded input frame ``[Ci, Hq, Wq, Np]``: for each
        entry e of W^T's row ci, ``gx[ci, S ho + kh, S wo + kw] += values[e] gy[r, ho, wo]`` with
        ``src[e] = r Ho Wo`` and ``dst[e] = kh Wq + kw`` (``gy [rows, Ho, Wo, Np]`` unpadded)."""
        self._check(crow, src, values, gy)
        self._check(crow, dst)
        self._check_planes(gy)
        (hq, wq), ci = frame, crow.numel() - 1
        _, ho, wo, np_ = gy.shape
        if not (src.numel() == dst.numel() == values.numel()) or stride < 1:
            raise ValueError("conv scatter operands do not match")
        gx = torch.empty(ci, hq, wq, np_, dtype=torch.float32)
        self._conv_scatter(ci, ho, wo, stride, hq, wq, crow.data_ptr(), src.data_ptr(), dst.data_ptr(),
                           values.data_ptr(), gy.data_ptr(), np_, gx.data_ptr(), torch.get_num_threads())
        return gx

    def conv_sddmm_t(self, crow: torch.Tensor, off: torch.Tensor, gy: torch.Tensor, gy_origin: tuple[int, int],
                     out_hw: tuple[int, int], inp: torch.Tensor, stride: int = 1) -> torch.Tensor:
        """Weight gradient at the nonzeros:
        ``g[k] = sum_{ho,wo,n} gy[r, oh+ho, ow+wo, n] inp[off[k] + S ho*Wp + S wo, n]``.

        ``gy [rows, gH, gW, Np]`` may be spatially padded; ``gy_origin = (oh, ow)`` locates its interior.
        """
        self._check(crow, off, gy, inp)
        self._check_planes(gy)
        self._check_planes(inp)
        (ho, wo), (oh, ow), rows = out_hw, gy_origin, crow.numel() - 1
        if gy.shape[0] != rows or oh + ho > gy.shape[1] or ow + wo > gy.shape[2] or gy.shape[3] != inp.shape[3]:
            raise ValueError("conv gradient geometry does not match the operands")
        np_ = inp.shape[3]
        g = torch.empty(off.numel(), dtype=torch.float32)
        origin = gy.data_ptr() + (oh * gy.shape[2] + ow) * np_ * gy.element_size()
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self._conv_sddmm(rows, ho, wo, inp.shape[2], stride, crow.data_ptr(), off.data_ptr(), origin, gy.shape[1],
                         gy.shape[2], inp.data_ptr(), np_, g.data_ptr(), torch.get_num_threads())
        return g


def load_native(cache_dir: Path | None = None, compiler: str | None = None) -> NativeKernels:
    """Build if needed and load; raises NativeBuildError on any failure."""
    compiler = compiler or os.environ.get("CC") or shutil.which("gcc") or "cc"
    path = build_native(cache_dir or default_cache_dir(), compiler)
    try:
        return NativeKernels(ctypes.CDLL(str(path)))
    except OSError as e:
        raise NativeBuildError(f"loading {path} failed: {e}") from None


@functools.lru_cache(maxsize=1)
def native_kernels() -> NativeKernels | None:
    """The process-wide native kernels, or None (with one warning) where they cannot be built."""
    try:
        return load_native()
    except NativeBuildError as e:
        warnings.warn(f"sparsecl native kernels unavailable, using torch sparse ops: {e}", RuntimeWarning,
                      stacklevel=2)
        return None
