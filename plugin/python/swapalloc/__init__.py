"""swapalloc: a CUDA caching allocator for PyTorch that swaps idle models to host memory.

Three lines make a pipeline of models swap automatically::

    import swapalloc
    swapalloc.install()                       # before CUDA is initialized
    swapalloc.attach(pipe.unet, "unet", device="cuda")

Each model lives in a pool of its own. When device use passes the high watermark (85%),
the allocator evicts the least recently used pools to compressed host memory until use is
back at the low one (75%), and a pool is restored at the same addresses when it is used
again (``attach`` activates it around each forward).

Everything here is thread-safe. Errors are exceptions of ``SwapallocError``'s family,
carrying the library's message (which names what was wrong and what is accepted).
"""
from __future__ import annotations

import contextlib
import ctypes
import json
from typing import Any, Iterator

from ._lib import (
    CorruptCopyError,
    CudaError,
    InvalidValueError,
    MisuseError,
    NoDriverError,
    NotInitializedError,
    OutOfMemoryError,
    SwapallocError,
    UnknownPoolError,
    check,
    library,
    library_path,
)

__all__ = [
    "install",
    "mempool",
    "init",
    "is_initialized",
    "configure",
    "pool",
    "create_pool",
    "active",
    "suspended",
    "guard",
    "attach",
    "prefetch",
    "evict",
    "ensure_free",
    "empty_cache",
    "stats",
    "memory_stats",
    "library_path",
    "SwapallocError",
    "NotInitializedError",
    "UnknownPoolError",
    "MisuseError",
    "OutOfMemoryError",
    "CudaError",
    "NoDriverError",
    "CorruptCopyError",
    "InvalidValueError",
]

PRIORITIES = {"low": 0, "normal": 1, "high": 2, "critical": 3}
DTYPES = {None: 0, "bf16": 1, "fp16": 2, "fp32": 3, "int8": 4}


class _PoolOptions(ctypes.Structure):
    _fields_ = [
        ("priority", ctypes.c_int),
        ("evictable", ctypes.c_int),
        ("read_only", ctypes.c_int),
        ("dtype", ctypes.c_int),
        ("capacity", ctypes.c_size_t),
    ]


def configure(**settings: Any) -> None:
    """Sets allocator settings, read when the allocator is created (``install``/``init``).

    Keys: high_watermark, low_watermark (fractions in (0, 1]), device_limit (bytes as
    "6GiB" or a fraction "0.5"), host_limit ("8G", "0.5", "50%"), workers (1 to 256),
    log_level ("off", "error", "warn", "info", "debug"), monitor_interval_ms, driver.
    A value of None unsets the key (its SWAPALLOC_* variable, else the default, applies).
    Raises InvalidValueError for an unknown key or a value not accepted, MisuseError once
    the allocator exists.
    """
    lib = library()
    for key, value in settings.items():
        text = "" if value is None else str(value)
        check(lib.swapalloc_configure(key.encode(), text.encode()))


def init() -> None:
    """Creates the allocator now (``install`` does this); a second call does nothing."""
    check(library().swapalloc_init())


def is_initialized() -> bool:
    """Whether the allocator exists."""
    return bool(library().swapalloc_is_initialized())


def _pool_id(name: str) -> int | None:
    found = ctypes.c_uint32()
    status = library().swapalloc_pool_find(name.encode(), ctypes.byref(found))
    if status == 3:  # unknown pool
        return None
    check(status)
    return found.value


def create_pool(
    name: str,
    *,
    priority: str = "normal",
    evictable: bool = True,
    read_only: bool = False,
    dtype: str | None = None,
) -> int:
    """The handle of pool ``name``, created with these options if it does not exist yet
    (an existing pool keeps the options it was created with).

    priority: "low", "normal", "high" or "critical" (never evicted); dtype: None, "bf16",
    "fp16", "fp32" or "int8" (picks the host codec); read_only: its bytes do not change
    while resident (weights), so an unchanged host copy is kept and re-evicting is free.
    """
    if priority not in PRIORITIES:
        raise InvalidValueError(
            f"swapalloc: priority={priority!r}: accepted {', '.join(PRIORITIES)}", 1
        )
    if dtype not in DTYPES:
        raise InvalidValueError(
            f"swapalloc: dtype={dtype!r}: accepted None, bf16, fp16, fp32, int8", 1
        )
    existing = _pool_id(name)
    if existing is not None:
        return existing
    options = _PoolOptions(PRIORITIES[priority], int(evictable), int(read_only), DTYPES[dtype], 0)
    made = ctypes.c_uint32()
    status = library().swapalloc_pool_create(name.encode(), ctypes.byref(options), ctypes.byref(made))
    if status == 4:  # another thread created it meanwhile
        existing = _pool_id(name)
        if existing is not None:
            return existing
    check(status)
    return made.value


def _require_pool(name: str) -> int:
    found = _pool_id(name)
    if found is None:
        raise UnknownPoolError(f"swapalloc: no pool named {name!r}", 3)
    return found


@contextlib.contextmanager
def pool(name: str, **options: Any) -> Iterator[int]:
    """Allocations of the calling thread inside the block go to pool ``name`` (created
    with ``options`` as in ``create_pool`` if new). Nests. Yields the pool's handle."""
    handle = create_pool(name, **options)
    lib = library()
    check(lib.swapalloc_pool_push(handle))
    try:
        yield handle
    finally:
        check(lib.swapalloc_pool_pop())


@contextlib.contextmanager
def active(name: str, device: int = 0, stream: int | None = None) -> Iterator[int]:
    """Pool ``name`` is in use inside the block: restored first if evicted (``stream``, a
    CUstream address, defaults to torch's current stream when torch is loaded, else the
    default stream, and waits for the copies), and never evicted until the block ends.
    What ``attach`` does around each forward. Nests. Yields the pool's handle."""
    handle = _require_pool(name)
    if stream is None:
        stream = _current_stream(device)
    lib = library()
    check(lib.swapalloc_activate(handle, device, ctypes.c_void_p(stream)))
    try:
        yield handle
    finally:
        check(lib.swapalloc_deactivate(handle, device, ctypes.c_void_p(stream)))


@contextlib.contextmanager
def suspended(name: str, device: int = 0) -> Iterator[int]:
    """Pool ``name`` is swapped out inside the block: it stops being active, is evicted to
    host memory (the block's value is the device bytes freed), and at the end it is restored
    at the same addresses and active again. For a pool that someone else keeps active, as the
    LD_PRELOAD interposer keeps its pool: the caller guarantees that no GPU work touches the
    pool inside the block (the program is idle). A failed eviction restores what it moved
    and raises."""
    handle = _require_pool(name)
    lib = library()
    check(lib.swapalloc_deactivate(handle, device, None))
    try:
        freed = ctypes.c_size_t()
        check(lib.swapalloc_evict(handle, device, ctypes.byref(freed)))
        yield freed.value
    finally:
        check(lib.swapalloc_activate(handle, device, None))


def _current_stream(device: int) -> int:
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return 0
    return torch.cuda.current_stream(device).cuda_stream


def evict(name: str, device: int = 0) -> int:
    """Evicts pool ``name`` on ``device`` to host memory now; returns the device bytes freed.
    Raises MisuseError for an active, critical or non-evictable pool."""
    freed = ctypes.c_size_t()
    check(library().swapalloc_evict(_require_pool(name), device, ctypes.byref(freed)))
    return freed.value


def prefetch(name: str, device: int = 0) -> None:
    """Starts restoring pool ``name`` in the background; a later use waits only for the rest."""
    check(library().swapalloc_prefetch(_require_pool(name), device))


class FreedBytes(int):
    """The bytes ``ensure_free`` freed; also a context manager, as the seeds' ``memory_guard``:
    ``with swapalloc.ensure_free(8 << 30): ...`` gives the cached pages of every pool back when
    the block ends (``empty_cache``), so that what the block freed is free again."""

    def __enter__(self) -> "FreedBytes":
        return self

    def __exit__(self, *_exc: object) -> None:
        empty_cache()


def ensure_free(nbytes: int, device: int = 0) -> FreedBytes:
    """Makes ``nbytes`` of ``device`` free for this process, evicting the coldest pools;
    returns the bytes freed (an int that is also a context manager: see FreedBytes). Raises
    OutOfMemoryError (with advice) when only critical or active pools remain."""
    if nbytes < 0:
        raise InvalidValueError(f"swapalloc: ensure_free(nbytes={nbytes}): must be >= 0", 1)
    freed = ctypes.c_size_t()
    check(library().swapalloc_ensure_free(nbytes, device, ctypes.byref(freed)))
    return FreedBytes(freed.value)


def guard(nbytes: int, device: int = 0) -> FreedBytes:
    """``ensure_free`` by the seeds' name for it as a context manager (``memory_guard``)."""
    return ensure_free(nbytes, device)


def empty_cache() -> int:
    """Releases every cached (free) page of every pool; returns the bytes released."""
    released = ctypes.c_size_t()
    check(library().swapalloc_empty_cache(ctypes.byref(released)))
    return released.value


def stats() -> dict[str, Any]:
    """The allocator's statistics: devices, pools (resident, evicted, host bytes...),
    totals, usage errors and recent events, as a dict."""
    text = ctypes.c_char_p()
    check(library().swapalloc_stats_json(ctypes.byref(text)))
    return json.loads(text.value.decode())


def memory_stats(device: int = 0) -> dict[str, int]:
    """The common keys of ``torch.cuda.memory_stats()`` (which raises under a pluggable
    allocator), from swapalloc's counters for ``device``: allocated_bytes.all.current and
    .peak, reserved_bytes.all.current and .peak, num_alloc_retries, num_ooms. Peaks are
    summed over pools, so they bound the device's peak from above."""
    data = stats()
    total = data["devices"][device]["total"]
    counters = data["devices"][device]["counters"]
    return {
        "allocated_bytes.all.current": total["allocated_bytes"],
        "allocated_bytes.all.peak": total["peak_allocated_bytes"],
        "reserved_bytes.all.current": total["reserved_bytes"],
        "reserved_bytes.all.peak": total["peak_reserved_bytes"],
        "num_alloc_retries": counters["alloc_retries"],
        "num_ooms": counters["ooms"],
    }


from ._torch import attach, install, mempool  # noqa: E402  (needs the names above)
