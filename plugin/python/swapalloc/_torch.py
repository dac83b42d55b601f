"""PyTorch integration: ``install`` (the pluggable allocator with every hook), ``mempool``
(MemPool mode: torch's own allocator stays current, a model's segments come from swapalloc)
and ``attach`` (a module's pool activated around each forward). torch is imported only when
these run."""
from __future__ import annotations

import contextlib
import ctypes
import threading
from typing import Any, Iterator

from ._lib import MisuseError, check, library, library_path

_install_lock = threading.Lock()
_installed: Any = None  # the CUDAPluggableAllocator, kept alive for the process
_mempool_lock = threading.Lock()
_mempool_allocator: Any = None  # the allocator MemPools are built on (not installed)
_mempools: dict[tuple[str, int], Any] = {}  # (pool name, device) -> torch.cuda.MemPool

# PyTorch's hook setters and the library functions they take (torch/csrc/cuda/Module.cpp).
_HOOKS = {
    "set_init_fn": "swapalloc_hook_init",
    "set_reset_fn": "swapalloc_hook_reset",
    "set_memory_fraction_fn": "swapalloc_hook_memory_fraction",
    "set_record_stream_fn": "swapalloc_hook_record_stream",
    "set_begin_allocate_to_pool": "swapalloc_hook_begin_allocate_to_pool",
    "set_end_allocate_to_pool_fn": "swapalloc_hook_end_allocate_to_pool",
    "set_release_pool": "swapalloc_hook_release_pool",
}


def _address(name: str) -> int:
    return ctypes.cast(getattr(library(), name), ctypes.c_void_p).value


def install(**settings: Any) -> None:
    """Makes swapalloc PyTorch's CUDA allocator, with every hook (init, empty_cache,
    set_per_process_memory_fraction, record_stream, CUDA-graph pools), and creates it.

    Must run before CUDA is initialized (before any ``.cuda()``, ``.to("cuda")`` or
    ``torch.cuda`` call that touches the device): PyTorch swaps its allocator only then.
    ``settings`` are ``configure``'s. A second call does nothing. Raises MisuseError when
    CUDA is already initialized or another pluggable allocator is installed.
    """
    import torch

    from . import configure, init

    global _installed
    with _install_lock:
        if _installed is not None:
            return
        if torch.cuda.is_initialized():
            raise MisuseError(
                "swapalloc.install(): CUDA is already initialized in this process, and "
                "PyTorch can change its allocator only before that. Call "
                "swapalloc.install() first, right after `import torch` and before any "
                ".cuda(), .to('cuda') or torch.cuda call that uses the device.",
                4,
            )
        if settings:
            configure(**settings)
        allocator = torch.cuda.memory.CUDAPluggableAllocator(
            library_path(), "swapalloc_torch_malloc", "swapalloc_free"
        )
        for setter, function in _HOOKS.items():
            getattr(allocator._allocator, setter)(_address(function))
        try:
            torch.cuda.memory.change_current_allocator(allocator)
        except RuntimeError as error:
            raise MisuseError(
                f"swapalloc.install(): PyTorch refused the allocator swap ({error}): another "
                "allocator was installed or used first",
                4,
            ) from error
        init()
        _installed = allocator


def _mempool_of(name: str, device: int) -> Any:
    """The torch.cuda.MemPool of swapalloc pool ``name`` on ``device``, made at first use on
    an allocator over libswapalloc.so (swapalloc_torch_malloc / swapalloc_free)."""
    import torch

    global _mempool_allocator
    with _mempool_lock:
        if _mempool_allocator is None:
            _mempool_allocator = torch.cuda.memory.CUDAPluggableAllocator(
                library_path(), "swapalloc_torch_malloc", "swapalloc_free"
            )
        key = (name, device)
        if key not in _mempools:
            with torch.cuda.device(device):
                _mempools[key] = torch.cuda.MemPool(_mempool_allocator.allocator())
        return _mempools[key]


@contextlib.contextmanager
def mempool(name: str, device: int = 0, **pool_options: Any) -> Iterator[Any]:
    """MemPool mode: inside the block, this thread's CUDA allocations on ``device`` go to a
    ``torch.cuda.MemPool`` whose segments PyTorch's own caching allocator takes from swapalloc
    pool ``name`` (created with ``pool_options`` as in ``create_pool`` if new). PyTorch's
    allocator stays current, so ``torch.cuda.memory_stats()``, snapshots and CUDA graphs keep
    working; swapalloc sees segments, not tensors, and moves them whole (cached free blocks
    inside them are moved as live bytes). The pool is active inside the block (restored
    first if it was evicted), because PyTorch may hand out a cached block of its segments
    there; outside it, the policy may evict it, and ``attach`` activates it around forwards.
    Yields the MemPool. Needs no ``install()``; works alongside it too.
    """
    import torch

    from . import active, create_pool, init, pool

    init()
    create_pool(name, **pool_options)
    memory_pool = _mempool_of(name, device)
    with active(name, device), pool(name), torch.cuda.use_mem_pool(memory_pool, device=device):
        yield memory_pool


class Attachment:
    """What ``attach`` returns: the pool's name and handle; ``remove()`` undoes the hooks."""

    def __init__(self, name: str, pool: int, device: int, handles: list[Any]) -> None:
        self.name = name
        self.pool = pool
        self.device = device
        self._handles = handles

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def _device_of(module: Any) -> int:
    import torch

    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_cuda:
            return tensor.device.index if tensor.device.index is not None else 0
    return torch.cuda.current_device()


def attach(module: Any, name: str, *, device: Any = None, **pool_options: Any) -> Attachment:
    """Gives ``module`` the pool ``name`` (created with ``pool_options`` as in
    ``create_pool`` if new) and activates it around each forward: a forward pre-hook
    activates it on the current stream (restoring it first if it was evicted: the stream
    waits for the copies, not the host), and a forward hook, which also runs when the
    forward raises, deactivates it. While active the policy never evicts it.

    With ``device`` (e.g. "cuda"), the module is moved there inside the pool's scope, so
    its parameters and buffers land in the pool: ``swapalloc.pool(name)`` when swapalloc is
    PyTorch's allocator (``install()``), else ``mempool(name)`` (MemPool mode). Without it,
    the module's tensors must already have been created inside one of those scopes.
    """
    import torch

    from . import create_pool, init, pool

    init()  # done by install(); MemPool mode needs it here
    handle = create_pool(name, **pool_options)
    if device is not None:
        if _installed is not None:
            with pool(name):
                module.to(device)
        else:
            index = torch.device(device).index
            with mempool(name, index if index is not None else torch.cuda.current_device()):
                module.to(device)
    index = _device_of(module)
    lib = library()
    # The activations this thread holds, so that the forward hook (which runs even when the
    # pre-hook or the forward raised) deactivates only what was activated.
    held = threading.local()

    def activate(_module: Any, _args: Any) -> None:
        stream = torch.cuda.current_stream(index).cuda_stream
        check(lib.swapalloc_activate(handle, index, ctypes.c_void_p(stream)))
        held.count = getattr(held, "count", 0) + 1

    def deactivate(_module: Any, _args: Any, _output: Any) -> None:
        if getattr(held, "count", 0) == 0:
            return  # the activation failed: its error is the one that propagates
        held.count -= 1
        stream = torch.cuda.current_stream(index).cuda_stream
        check(lib.swapalloc_deactivate(handle, index, ctypes.c_void_p(stream)))

    handles = [
        module.register_forward_pre_hook(activate),
        module.register_forward_hook(deactivate, always_call=True),
    ]
    return Attachment(name, handle, index, handles)
