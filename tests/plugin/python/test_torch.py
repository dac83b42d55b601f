"""swapalloc under real torch 2.15 on the simulator (through the CUDA runtime shim): the
allocator swap and every hook, pool scopes, attach() in a three-model pipeline that does not
fit, memory_stats, ensure_free and prefetch. Each case runs in a fresh process (conftest)."""
import os

MiB = 1 << 20


def test_install_swaps_the_allocator_and_every_hook_reaches_swapalloc(case):
    out = case("install_hooks")
    assert out["initialized_before_cuda"] is True
    assert out["backend"] == "pluggable"
    assert out["default_allocated"] == 3 * MiB, "the tensor's bytes are in the default pool"
    assert out["round_trip"] is True, ".cuda() then .cpu() gives the same bytes"
    assert out["reserved_before_empty_cache"] > 0, "the freed block stays cached"
    assert out["reserved_after_empty_cache"] == 0, "torch.cuda.empty_cache() -> reset hook"
    assert out["over_fraction"] != "allocated", "set_per_process_memory_fraction(0.25) limits"
    assert out["ooms"] == 1
    assert out["usage_errors"] == 0, "record_stream and the frees were all valid"


def test_install_after_cuda_init_refuses_and_says_what_to_do(case):
    out = case("install_after_cuda_init")
    assert out["raised"] == "MisuseError"
    assert "already initialized" in out["message"]
    assert "swapalloc.install() first" in out["message"]


def test_pool_scopes_put_each_tensor_in_its_pool(case):
    out = case("pool_scopes")
    assert out["sdxl"] == 7 * MiB
    assert out["sdxl_blocks"] == 2
    assert out["birefnet"] == 2 * MiB, "the inner scope wins"
    assert out["default"] == MiB, "outside every scope"
    assert out["handle_is_int"] is True
    assert out["after_free"] == 0


def test_attached_models_are_restored_before_each_forward_and_stay_bit_identical(case):
    out = case("attach_pipeline")
    assert out["forwards"] == 30
    assert out["restored_before_forward"] is True
    assert out["outputs_equal"] is True
    assert out["weights_equal"] is True, "parameters after 10 rounds are the loaded ones"
    assert out["evictions"] > 0 and out["restores"] > 0, "the three did not fit: it swapped"
    # The weights (96 MiB) and the output (96 MiB) of the model running, under the high
    # watermark (0.85 x 256 MiB) plus one 2 MiB page, sampled inside every forward.
    assert out["peak_device_use_MiB"] <= 0.85 * 256 + 2


def test_memory_stats_ensure_free_guard_and_prefetch(case):
    out = case("memory_stats_ensure_free_prefetch")
    assert out["keys"] == sorted([
        "allocated_bytes.all.current", "allocated_bytes.all.peak",
        "reserved_bytes.all.current", "reserved_bytes.all.peak",
        "num_alloc_retries", "num_ooms",
    ])
    assert out["allocated"] == 64 * MiB
    assert out["freed"] >= 64 * MiB, "ensure_free evicted pool a"
    assert out["a_evicted"] == 64 * MiB
    assert out["guard_freed"] == 0, "10 MiB were free already"
    assert out["cached_in_guard"] >= 8 * MiB, "the freed scratch stays cached in the block"
    assert out["cached_after_guard"] == 0, "the guard gives cached pages back at its end"
    assert out["ensure_free_context"] == 0
    assert out["a_evicted_after"] == 0, "active: restored"
    assert out["a_equal"] is True
    assert out["too_much"] == "OutOfMemoryError"


def test_private_pool_hooks_route_a_threads_allocations_and_release_the_pool(case):
    out = case("private_pool_hooks")
    assert out["pool_allocated"] == 2 * MiB, "begin-allocate-to-pool routed the thread"
    assert out["default_allocated"] == MiB, "after end-allocate-to-pool: the default pool"
    assert out["pool_evictable"] is False
    assert out["evict"] == "MisuseError", "a graph's pool is never evicted"
    assert out["kept_while_used"] is True, "released with a live tensor: kept"
    assert out["gone_after_release"] is True, "destroyed once empty (empty_cache)"


def test_preload_puts_an_unmodified_scripts_segments_in_a_pool_that_swaps_intact(case):
    preload = os.environ.get("SWAPALLOC_PRELOAD_LIBRARY")
    assert preload, "CTest sets SWAPALLOC_PRELOAD_LIBRARY to libswapalloc_preload.so"
    out = case("preload_unmodified",
               env={"LD_PRELOAD": f"{preload}:{os.environ.get('LD_PRELOAD', '')}"})
    assert out["backend"] == "native", "torch's own allocator stays current"
    assert out["preload_allocated"] >= out["tensor_bytes"] > 0
    assert out["preload_allocated"] == out["torch_reserved"], \
        "every segment torch reserved is in the pool, and nothing else"
    assert out["freed"] >= out["tensor_bytes"], "the whole pool left the device"
    assert out["evicted_inside"] >= out["tensor_bytes"]
    assert out["evicted_after"] == 0, "resumed: restored at the same addresses"
    assert out["equal"] is True, ".cpu() after the swap gives the bytes put there"
    assert out["allocated_after_empty_cache"] == 0, "torch's cudaFree reached swapalloc"


def test_mempool_mode_keeps_torchs_allocator_and_swaps_each_models_segments(case):
    out = case("mempool_models")
    assert out["backend"] == "native", "no install(): torch's allocator stays current"
    for name in ("a", "b"):
        assert out[f"{name}_allocated"] >= out["weight_bytes"][name], f"{name}'s segments"
    assert out["torch_allocated"] >= out["weight_bytes"]["a"] + out["weight_bytes"]["b"]
    assert out["torch_reserved"] >= out["a_allocated"] + out["b_allocated"], \
        "torch counts the MemPools' segments as its own"
    assert out["a_freed"] >= out["weight_bytes"]["a"] and out["a_evicted"] > 0
    assert out["a_restored_before_forward"] is True
    assert out["a_output_equal"] is True
    assert out["b_freed"] >= out["weight_bytes"]["b"]
    assert out["b_weights_equal"] is True and out["a_weights_equal"] is True
    assert out["torch_stats_after"] == out["torch_allocated"], "torch's stats still answer"
    assert out["snapshot_segments"] >= 2
