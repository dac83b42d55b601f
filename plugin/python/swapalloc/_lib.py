"""ctypes bindings of libswapalloc.so's C ABI (include/swapalloc/swapalloc.h).

The library is found, in order: $SWAPALLOC_LIBRARY (a path); libswapalloc.so installed
next to this package (``pip install``); build/lib/libswapalloc.so of the source checkout
this package lives in (a developer's build). Each C call's status becomes an exception
carrying the library's message (``swapalloc_last_error``), of the class that fits the
status (see ``_STATUS_ERRORS``).
"""
from __future__ import annotations

import ctypes
import os
import pathlib


class SwapallocError(RuntimeError):
    """A failed swapalloc call; ``status`` is the C ABI's swapalloc_status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class NotInitializedError(SwapallocError):
    """The allocator is not initialized: call swapalloc.install() (or init()) first."""


class UnknownPoolError(SwapallocError, LookupError):
    """No live pool has this name or handle."""


class MisuseError(SwapallocError):
    """A call the allocator refuses: a pool in use, an unbalanced scope, a bad device..."""


class OutOfMemoryError(SwapallocError, MemoryError):
    """Device memory could not be found even after evicting what the policy allows."""


class CudaError(SwapallocError):
    """A CUDA driver call failed."""


class NoDriverError(SwapallocError):
    """The CUDA driver could not be loaded."""


class CorruptCopyError(SwapallocError):
    """A host copy failed its checksum: the pool stays evicted with its copy."""


class InvalidValueError(SwapallocError, ValueError):
    """A bad argument: the message names it, its value and what is accepted."""


_STATUS_ERRORS = {
    1: InvalidValueError,
    2: NotInitializedError,
    3: UnknownPoolError,
    4: MisuseError,
    5: OutOfMemoryError,
    6: CudaError,
    7: NoDriverError,
    8: CorruptCopyError,
}

_ABI_VERSION = 1


def library_path() -> str:
    """The path of the libswapalloc.so this package uses (see the module docstring)."""
    named = os.environ.get("SWAPALLOC_LIBRARY")
    if named:
        return named
    here = pathlib.Path(__file__).resolve().parent
    installed = here / "libswapalloc.so"
    if installed.exists():
        return str(installed)
    checkout = here.parents[2] / "build" / "lib" / "libswapalloc.so"
    if checkout.exists():
        return str(checkout)
    raise NoDriverError(
        "swapalloc: libswapalloc.so not found: install the package with `pip install .` "
        "from the repository, build it (tools/build-and-test), or set SWAPALLOC_LIBRARY "
        f"to its path (looked in {installed} and {checkout})",
        7,
    )


def _declare(lib: ctypes.CDLL) -> None:
    status = ctypes.c_int
    pool_id = ctypes.c_uint32
    size_p = ctypes.POINTER(ctypes.c_size_t)
    signatures = {
        "swapalloc_abi_version": (ctypes.c_int, []),
        "swapalloc_last_error": (ctypes.c_char_p, []),
        "swapalloc_configure": (status, [ctypes.c_char_p, ctypes.c_char_p]),
        "swapalloc_init": (status, []),
        "swapalloc_is_initialized": (ctypes.c_int, []),
        "swapalloc_shutdown": (status, []),
        "swapalloc_malloc": (ctypes.c_void_p, [ctypes.c_ssize_t, ctypes.c_int, ctypes.c_void_p]),
        "swapalloc_free": (None, [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_int, ctypes.c_void_p]),
        "swapalloc_pool_create": (status, [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(pool_id)]),
        "swapalloc_pool_find": (status, [ctypes.c_char_p, ctypes.POINTER(pool_id)]),
        "swapalloc_pool_name": (status, [pool_id, ctypes.POINTER(ctypes.c_char_p)]),
        "swapalloc_pool_destroy": (status, [pool_id]),
        "swapalloc_pool_push": (status, [pool_id]),
        "swapalloc_pool_pop": (status, []),
        "swapalloc_pool_current": (status, [ctypes.POINTER(pool_id)]),
        "swapalloc_pool_set_read_only": (status, [pool_id, ctypes.c_int]),
        "swapalloc_activate": (status, [pool_id, ctypes.c_int, ctypes.c_void_p]),
        "swapalloc_deactivate": (status, [pool_id, ctypes.c_int, ctypes.c_void_p]),
        "swapalloc_evict": (status, [pool_id, ctypes.c_int, size_p]),
        "swapalloc_prefetch": (status, [pool_id, ctypes.c_int]),
        "swapalloc_ensure_free": (status, [ctypes.c_size_t, ctypes.c_int, size_p]),
        "swapalloc_empty_cache": (status, [size_p]),
        "swapalloc_stats_json": (status, [ctypes.POINTER(ctypes.c_char_p)]),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes


_library: ctypes.CDLL | None = None


def library() -> ctypes.CDLL:
    """The loaded libswapalloc.so (loaded once, on first use), with its signatures declared."""
    global _library
    if _library is None:
        path = library_path()
        try:
            lib = ctypes.CDLL(path)
        except OSError as error:
            raise NoDriverError(f"swapalloc: cannot load {path}: {error}", 7) from error
        _declare(lib)
        version = lib.swapalloc_abi_version()
        if version != _ABI_VERSION:
            raise SwapallocError(
                f"swapalloc: {path} has C ABI version {version}; this package needs "
                f"{_ABI_VERSION}: reinstall the package and the library together",
                9,
            )
        _library = lib
    return _library


def last_error() -> str:
    """The calling thread's last failure message of the library."""
    message = library().swapalloc_last_error()
    return message.decode("utf-8", "replace") if message else ""


def check(status: int) -> None:
    """Raises the exception that fits a non-zero swapalloc_status, with the message."""
    if status != 0:
        raise _STATUS_ERRORS.get(status, SwapallocError)(last_error(), status)
