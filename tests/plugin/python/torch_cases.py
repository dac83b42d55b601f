"""The torch cases of the Python package's tests: `python torch_cases.py <case>` runs one in
this fresh process and prints its result as one JSON line. Run by conftest.run_case.

Only copies run on the simulator (kernels do not): tensors are made on the CPU and moved
with .cuda()/.to()/copy_/clone, or made with torch.empty on the device; nothing prints a
CUDA tensor. Sizes suit SWAPALLOC_SIM_MEMORY=256M.
"""
from __future__ import annotations

import json
import sys

import torch

import swapalloc

MiB = 1 << 20


def pool_stats(name: str) -> dict:
    for pool in swapalloc.stats()["devices"][0]["pools"]:
        if pool["name"] == name:
            return pool
    return {}


def host_tensor(nbytes: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(-(2**31), 2**31 - 1, (nbytes // 4,), dtype=torch.int32, generator=generator)


def case_install_hooks() -> dict:
    swapalloc.install()
    out = {"initialized_before_cuda": swapalloc.is_initialized(),
           "backend": torch.cuda.get_allocator_backend()}
    data = host_tensor(3 * MiB, 1)
    on_device = data.cuda()
    out["default_allocated"] = pool_stats("default")["allocated_bytes"]
    out["round_trip"] = bool(torch.equal(on_device.cpu(), data))
    del on_device
    out["reserved_before_empty_cache"] = pool_stats("default")["reserved_bytes"]
    torch.cuda.empty_cache()  # the reset hook
    out["reserved_after_empty_cache"] = pool_stats("default")["reserved_bytes"]
    torch.cuda.set_per_process_memory_fraction(0.25)  # 64 of 256 MiB: the fraction hook
    try:
        torch.empty(80 * MiB, dtype=torch.uint8, device="cuda")
        out["over_fraction"] = "allocated"
    except Exception as error:  # noqa: BLE001 - the case reports what torch raised
        out["over_fraction"] = type(error).__name__
        out["over_fraction_message"] = str(error)[:400]
    out["ooms"] = swapalloc.memory_stats()["num_ooms"]
    torch.cuda.set_per_process_memory_fraction(1.0)
    side = torch.cuda.Stream()
    block = torch.empty(MiB, dtype=torch.uint8, device="cuda")
    block.record_stream(side)  # the record_stream hook
    del block
    torch.cuda.synchronize()
    out["usage_errors"] = swapalloc.stats()["usage_errors"]["total"]
    return out


def case_install_after_cuda_init() -> dict:
    torch.empty(16, device="cuda")  # the native allocator, CUDA initialized
    try:
        swapalloc.install()
    except swapalloc.MisuseError as error:
        return {"raised": "MisuseError", "message": str(error)}
    return {"raised": None}


def case_pool_scopes() -> dict:
    swapalloc.install()
    with swapalloc.pool("sdxl", priority="high", dtype="bf16") as handle:
        a = host_tensor(4 * MiB, 2).cuda()
        b = torch.empty(3 * MiB, dtype=torch.uint8, device="cuda")
        with swapalloc.pool("birefnet"):
            c = host_tensor(2 * MiB, 3).cuda()
    d = torch.empty(MiB, dtype=torch.uint8, device="cuda")
    out = {name: pool_stats(name)["allocated_bytes"] for name in ("sdxl", "birefnet", "default")}
    out["handle_is_int"] = isinstance(handle, int)
    out["sdxl_blocks"] = pool_stats("sdxl")["live_blocks"]
    del a, b, c, d
    out["after_free"] = pool_stats("sdxl")["allocated_bytes"]
    return out


class CopyModel(torch.nn.Module):
    """A model whose forward only copies: out = a copy of its weight, into a new tensor."""

    def __init__(self, nbytes: int, seed: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(host_tensor(nbytes, seed), requires_grad=False)
        self.restored_before_forward: list[bool] = []
        self.device_use: list[int] = []

    def forward(self, pool_name: str) -> torch.Tensor:
        self.restored_before_forward.append(pool_stats(pool_name)["evicted_bytes"] == 0)
        out = torch.empty_like(self.weight)
        out.copy_(self.weight)
        free, total = torch.cuda.mem_get_info()  # the simulated device, all of it
        self.device_use.append(total - free)
        return out


def case_attach_pipeline() -> dict:
    swapalloc.install()
    names = ["sdxl", "birefnet", "flux"]
    models = [CopyModel(96 * MiB, seed) for seed in range(3)]  # 288 MiB > 0.85 x 256 MiB
    expected = [m.weight.detach().clone() for m in models]
    for model, name in zip(models, names):
        swapalloc.attach(model, name, device="cuda")
    outputs_equal = True
    for _ in range(10):
        for model, name in zip(models, names):
            out = model(name)
            outputs_equal &= bool(torch.equal(out.cpu(), expected[names.index(name)]))
            del out
    weights_equal = True
    for model, name, weights in zip(models, names, expected):
        with swapalloc.active(name):  # evicted ones are restored to be read
            weights_equal &= bool(torch.equal(model.weight.detach().cpu(), weights))
    return {
        "restored_before_forward": all(all(m.restored_before_forward) for m in models),
        "forwards": sum(len(m.restored_before_forward) for m in models),
        "outputs_equal": outputs_equal,
        "weights_equal": weights_equal,
        "evictions": sum(pool_stats(n)["evictions"] for n in names),
        "restores": sum(pool_stats(n)["restores"] for n in names),
        "peak_device_use_MiB": max(max(m.device_use) for m in models) / MiB,
    }


def case_memory_stats_ensure_free_prefetch() -> dict:
    swapalloc.install()
    with swapalloc.pool("a"):
        kept = host_tensor(64 * MiB, 4)
        a = kept.cuda()
    stats = swapalloc.memory_stats()
    out = {"keys": sorted(stats), "allocated": stats["allocated_bytes.all.current"]}
    out["freed"] = swapalloc.ensure_free(200 * MiB)  # 64 + 200 > 217.6 MiB: a is evicted
    out["a_evicted"] = pool_stats("a")["evicted_bytes"]
    with swapalloc.guard(10 * MiB) as freed:
        out["guard_freed"] = freed
        scratch = torch.empty(8 * MiB, dtype=torch.uint8, device="cuda")
        del scratch
        out["cached_in_guard"] = pool_stats("default")["reserved_bytes"]
    out["cached_after_guard"] = pool_stats("default")["reserved_bytes"]
    with swapalloc.ensure_free(MiB) as freed:  # ensure_free itself is the context manager
        out["ensure_free_context"] = int(freed)
    swapalloc.prefetch("a")
    with swapalloc.active("a"):  # waits for what the prefetch has left
        out["a_evicted_after"] = pool_stats("a")["evicted_bytes"]
        out["a_equal"] = bool(torch.equal(a.cpu(), kept))
    try:
        swapalloc.ensure_free(300 * MiB)
        out["too_much"] = None
    except swapalloc.OutOfMemoryError as error:
        out["too_much"] = "OutOfMemoryError"
        out["too_much_message"] = str(error)[:200]
    return out


def case_private_pool_hooks() -> dict:
    """torch's begin/end-allocate-to-pool and release-pool (what CUDA graphs and MemPool
    use) reach the library: the thread's allocations land in pool torch_pool_7_8, which is
    never evicted and goes once released and empty."""
    swapalloc.install()
    out = {}
    torch._C._cuda_beginAllocateCurrentThreadToPool(0, (7, 8))
    routed = host_tensor(2 * MiB, 7).cuda()
    torch._C._cuda_endAllocateToPool(0, (7, 8))
    after = torch.empty(MiB, dtype=torch.uint8, device="cuda")
    out["pool_allocated"] = pool_stats("torch_pool_7_8").get("allocated_bytes")
    out["pool_evictable"] = pool_stats("torch_pool_7_8").get("evictable")
    out["default_allocated"] = pool_stats("default").get("allocated_bytes")
    try:
        swapalloc.evict("torch_pool_7_8")
        out["evict"] = "evicted"
    except swapalloc.MisuseError:
        out["evict"] = "MisuseError"
    torch._C._cuda_releasePool(0, (7, 8))
    out["kept_while_used"] = bool(pool_stats("torch_pool_7_8"))
    del routed, after
    torch.cuda.empty_cache()
    out["gone_after_release"] = not pool_stats("torch_pool_7_8")
    return out


def case_serve() -> dict:
    """Holds two pools (one evicted) until a line arrives on stdin: a process for `ps`."""
    swapalloc.install()
    with swapalloc.pool("sdxl", priority="high"):
        kept = host_tensor(8 * MiB, 5).cuda()
    with swapalloc.pool("flux"):
        held = host_tensor(4 * MiB, 6).cuda()
    swapalloc.evict("flux")
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    del kept, held
    return {"served": True}


def case_mempool_models() -> dict:
    """MemPool mode (no install()): two models moved to the device by attach() land in two
    MemPools whose segments are swapalloc pools 'a' and 'b'. 'a' is evicted and restored
    (by its next forward), 'b' evicted and read back; PyTorch's own statistics keep working."""
    models = {"a": CopyModel(40 * MiB, 31), "b": CopyModel(24 * MiB, 32)}
    expected = {name: m.weight.detach().clone() for name, m in models.items()}
    for name, model in models.items():
        swapalloc.attach(model, name, device="cuda")
    out = {"backend": torch.cuda.get_allocator_backend(),
           "a_allocated": pool_stats("a")["allocated_bytes"],
           "b_allocated": pool_stats("b")["allocated_bytes"],
           "weight_bytes": {n: m.weight.numel() * m.weight.element_size() for n, m in models.items()}}
    torch_stats = torch.cuda.memory_stats()  # raises under a pluggable allocator, not here
    out["torch_allocated"] = torch_stats["allocated_bytes.all.current"]
    out["torch_reserved"] = torch_stats["reserved_bytes.all.current"]
    out["a_freed"] = swapalloc.evict("a")
    out["a_evicted"] = pool_stats("a")["evicted_bytes"]
    output = models["a"]("a")  # attach restores it first
    out["a_restored_before_forward"] = models["a"].restored_before_forward == [True]
    out["a_output_equal"] = bool(torch.equal(output.cpu(), expected["a"]))
    del output
    out["b_freed"] = swapalloc.evict("b")
    with swapalloc.active("b"):
        out["b_weights_equal"] = bool(torch.equal(models["b"].weight.detach().cpu(), expected["b"]))
    out["a_weights_equal"] = bool(torch.equal(models["a"].weight.detach().cpu(), expected["a"]))
    out["torch_stats_after"] = torch.cuda.memory_stats()["allocated_bytes.all.current"]
    out["snapshot_segments"] = len(torch.cuda.memory_snapshot())
    return out


def case_preload_unmodified() -> dict:
    """No install(): torch's own caching allocator stays current and asks cudaMalloc for its
    segments, which libswapalloc_preload.so (in LD_PRELOAD) puts in the pool 'preload'. While
    the main thread waits, a second thread suspends that pool (evicts it) and resumes it (a
    restore at the same addresses); the tensors then read back bit-identical."""
    import threading

    host = [host_tensor(n * MiB, 20 + i) for i, n in enumerate((3, 12, 30))]
    device = [t.cuda() for t in host]  # the unmodified part: plain torch
    torch.cuda.synchronize()
    out = {"backend": torch.cuda.get_allocator_backend(),
           "tensor_bytes": sum(t.numel() * t.element_size() for t in host),
           "torch_reserved": torch.cuda.memory_reserved(),
           "preload_allocated": pool_stats("preload").get("allocated_bytes", 0)}
    moved: dict = {}

    def controller() -> None:
        with swapalloc.suspended("preload") as freed:
            moved["freed"] = freed
            moved["evicted_inside"] = pool_stats("preload")["evicted_bytes"]
        moved["evicted_after"] = pool_stats("preload")["evicted_bytes"]

    thread = threading.Thread(target=controller)
    thread.start()
    thread.join()
    out.update(moved)
    out["equal"] = all(torch.equal(d.cpu(), h) for d, h in zip(device, host))
    del device
    torch.cuda.empty_cache()  # torch gives its segments back: cudaFree
    out["allocated_after_empty_cache"] = pool_stats("preload")["allocated_bytes"]
    return out


CASES = {name[len("case_"):]: function for name, function in globals().items() if name.startswith("case_")}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CASES:
        print(f"usage: torch_cases.py <case>; cases: {', '.join(CASES)}", file=sys.stderr)
        sys.exit(64)
    print(json.dumps(CASES[sys.argv[1]]()))
