"""The swapalloc package's own API, without torch (in this process): configuration, pools and
scopes, and an exception of the right class, with the library's message, for each misuse."""
import pytest

import swapalloc


@pytest.fixture(scope="module", autouse=True)
def initialized():
    swapalloc.configure(workers=1, monitor_interval_ms=50)
    swapalloc.init()
    yield


def test_configure_after_init_is_a_misuse_and_bad_keys_are_named():
    with pytest.raises(swapalloc.MisuseError, match="configure before it"):
        swapalloc.configure(workers=2)
    assert swapalloc.is_initialized()


def test_pool_options_are_checked_before_anything_is_created():
    with pytest.raises(swapalloc.InvalidValueError, match="priority='urgent'"):
        swapalloc.create_pool("p", priority="urgent")
    with pytest.raises(swapalloc.InvalidValueError, match="dtype='fp8'"):
        swapalloc.create_pool("p", dtype="fp8")
    names = [pool["name"] for pool in swapalloc.stats()["devices"][0]["pools"]]
    assert "p" not in names


def test_create_pool_returns_the_same_handle_for_the_same_name():
    first = swapalloc.create_pool("weights", priority="high", dtype="bf16", read_only=True)
    assert swapalloc.create_pool("weights") == first
    with swapalloc.pool("weights") as handle:
        assert handle == first


def test_unknown_pools_raise_lookup_errors_with_the_name():
    with pytest.raises(swapalloc.UnknownPoolError, match="'nope'") as raised:
        swapalloc.evict("nope")
    assert isinstance(raised.value, LookupError)
    with pytest.raises(LookupError):
        swapalloc.prefetch("nope")
    with pytest.raises(LookupError):
        with swapalloc.active("nope"):
            pass


def test_misuse_is_refused_with_the_librarys_message():
    with pytest.raises(swapalloc.MisuseError, match="default pool") as raised:
        swapalloc.evict("default")
    assert raised.value.status == 4
    with pytest.raises(swapalloc.InvalidValueError, match="nbytes=-1"):
        swapalloc.ensure_free(-1)
    with pytest.raises(swapalloc.OutOfMemoryError) as too_much:
        swapalloc.ensure_free(1 << 40)
    assert isinstance(too_much.value, MemoryError)
    assert "out of memory" in str(too_much.value)


def test_stats_and_memory_stats_are_consistent():
    stats = swapalloc.stats()
    memory = swapalloc.memory_stats()
    total = stats["devices"][0]["total"]
    assert memory["allocated_bytes.all.current"] == total["allocated_bytes"]
    assert memory["reserved_bytes.all.current"] == total["reserved_bytes"]
    assert memory["num_ooms"] == stats["devices"][0]["counters"]["ooms"]
    assert swapalloc.empty_cache() >= 0


def _pool(name: str) -> dict:
    return next(p for p in swapalloc.stats()["devices"][0]["pools"] if p["name"] == name)


def test_suspended_swaps_an_active_pool_out_and_back_and_refuses_an_inactive_one():
    lib = swapalloc._lib.library()
    nbytes = 4 << 20
    with swapalloc.pool("kept"):
        block = lib.swapalloc_malloc(nbytes, 0, None)
    assert block, swapalloc._lib.last_error()
    with swapalloc.active("kept"):  # as the LD_PRELOAD interposer keeps its pool active
        with swapalloc.suspended("kept") as freed:
            assert freed >= nbytes
            assert _pool("kept")["evicted_bytes"] >= nbytes
            assert _pool("kept")["active"] is False
        assert _pool("kept")["evicted_bytes"] == 0, "restored at the end of the block"
        assert _pool("kept")["active"] is True, "and active again"
    with pytest.raises(swapalloc.MisuseError, match="not active"):
        with swapalloc.suspended("kept"):
            pass
    assert _pool("kept")["evicted_bytes"] == 0, "a refused suspend moves nothing"
    lib.swapalloc_free(block, nbytes, 0, None)
    assert _pool("kept")["allocated_bytes"] == 0
