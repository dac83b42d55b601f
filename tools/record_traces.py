#!/usr/bin/env python3
"""Record allocation traces of real PyTorch workloads for swapalloc's replay tests.

What it records
---------------
Each workload below runs on the CPU, from a fresh Python process, under

    torch.profiler.profile(activities=[ProfilerActivity.CPU], profile_memory=True)

The profiler's chrome trace is exported to a temporary file and its ``[memory]``
instant events are read back. Every such event is one call into c10's CPU
allocator: ``args.Addr`` (the pointer), ``args.Bytes`` (the size; negative for a
free) and ``args["Total Allocated"]`` (the profiler's running sum of live bytes).
The events are sorted by time stamp and turned into an allocation trace: an alloc
gets the next allocation id (0, 1, 2, ... in order), a free is matched to the live
id at the same address, so a replay needs no addresses.

* A free whose address is not live (a block allocated before profiling started)
  is dropped and counted (``dropped_frees`` in the header). In a fresh process the
  CPU profiler does not even report such frees, so the count is normally 0.
* Blocks still live when profiling stops are simply left live (``live_at_end``
  in the header): a replay frees them, or not, as it likes.
* Checks made while converting (the script fails if one does not hold): a free's
  size equals its allocation's size; an alloc never lands on a live address; and
  at every event, live bytes computed from the trace equal the profiler's
  ``Total Allocated`` minus its value before the first event, so the trace's peak
  live bytes equals max(Total Allocated) - baseline (reported in the header as
  ``profiler_peak_bytes``). The written file is then parsed back and checked
  (ids dense, every free of a live id, header counts and peak consistent).

Each workload runs with one intra-op and one inter-op thread and fixed seeds, so
a rerun with the same torch build produces the same events (the header's date
line aside; checked by recording twice and comparing).

Workloads
---------
gpt_train_step  GPT-style decoder (4 layers, d_model 256, 8 heads, vocab 8192,
                context 128, tied embedding, no dropout, flash-attention SDPA),
                batch 4 x 128 tokens: model construction, then 3 steps of
                forward, cross-entropy loss, backward, AdamW(fused=True) step,
                zero_grad(set_to_none=True). The model is built inside the
                profiler, so weights, gradients and optimizer states are all in
                the trace; model and optimizer outlive the profiler.
gpt_generate    The same model (eval, torch.no_grad), batch 2, prompt
                of 32 tokens, 64 new tokens sampled one at a time, with a KV cache
                per layer that grows by torch.cat (a new, larger key and value
                tensor per layer per token; the old ones are freed).
cnn_infer       A ResNet-like conv net (BasicBlocks, widths 32-256, BatchNorm, eval,
                torch.no_grad), 3 batches of 8 x 3 x 128 x 128 images.

File format (``<workload>.trace``, text, one record per line)
-------------------------------------------------------------
    # swapalloc allocation trace v1
    # <key>: <value>            header: workload, description, torch, python,
    # ...                         recorded (UTC), events, allocations, frees,
    #                             live_at_end, live_bytes_at_end, peak_live_bytes,
    #                             dropped_frees, profiler_peak_bytes, ...
    a <id> <bytes> <stream>     an allocation of <bytes> bytes; ids are 0,1,2,...
                                in order of first appearance
    f <id>                      the free of allocation <id> (size as allocated)

Lines beginning with ``#`` are comments (the header is a block of them at the top);
blank lines never occur. All numbers are decimal integers. ``<stream>`` is always
0: the CPU has no streams, so these traces hold a single stream. ``<bytes>`` is
the size PyTorch requested (tensor nbytes), not rounded by any allocator. A reader
in C++ needs only ``std::getline`` and ``std::istringstream``.

How to rerun
------------
    python3 tools/record_traces.py --out tests/data/traces

with torch installed in that python (the checked-in traces were made with the
torch and python versions in their headers: torch 2.15.0+cu132, CPU only, Python
3.11). ``--only NAME`` (repeatable) records a subset; ``--check DIR`` only
validates existing trace files. It rewrites ``<out>/README.md`` only when all
three workloads are recorded. Nothing is downloaded: models are random-initialised
torch.nn modules; their shapes, not their weights, determine the trace.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile

FORMAT_MAGIC = "# swapalloc allocation trace v1"
WORKLOADS = ("gpt_train_step", "gpt_generate", "cnn_infer")


def import_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit(
            "record_traces.py: PyTorch is not installed for %s.\n"
            "Install it with `pip install torch` (the CPU build is enough) and rerun."
            % sys.executable
        )
    return torch


# ---------------------------------------------------------------------------
# Workloads (run inside the profiler, in a worker process)
# ---------------------------------------------------------------------------

GPT = dict(n_layer=4, d_model=256, n_head=8, vocab=8192, ctx=128, dropout=0.0)
TRAIN = dict(batch=4, seq=128, steps=3, lr=3e-4)
GEN = dict(batch=2, prompt=32, new_tokens=64, temperature=0.8)
CNN = dict(batch=8, image=128, batches=3, widths=(32, 64, 128, 256))


def build_gpt(torch, dropout):
    nn = torch.nn
    F = torch.nn.functional
    c = GPT

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            d = c["d_model"]
            self.ln1 = nn.LayerNorm(d)
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.ln2 = nn.LayerNorm(d)
            self.fc1 = nn.Linear(d, 4 * d)
            self.fc2 = nn.Linear(4 * d, d)
            self.drop = nn.Dropout(dropout)

        def forward(self, x, cache=None):
            B, T, C = x.shape
            H = c["n_head"]
            q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
            q = q.view(B, T, H, C // H).transpose(1, 2)
            k = k.view(B, T, H, C // H).transpose(1, 2)
            v = v.view(B, T, H, C // H).transpose(1, 2)
            if cache is not None:
                if cache[0] is not None:  # grow the KV cache
                    k = torch.cat([cache[0], k], dim=2)
                    v = torch.cat([cache[1], v], dim=2)
                cache[0], cache[1] = k, v
            # Causal within the new tokens; a single new token sees everything.
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=T > 1,
                dropout_p=dropout if self.training else 0.0)
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            x = x + self.drop(self.proj(y))
            x = x + self.drop(self.fc2(F.gelu(self.fc1(self.ln2(x)))))
            return x

    class GPTModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(c["vocab"], c["d_model"])
            self.pos = nn.Embedding(c["ctx"], c["d_model"])
            self.drop = nn.Dropout(dropout)
            self.blocks = nn.ModuleList(Block() for _ in range(c["n_layer"]))
            self.ln_f = nn.LayerNorm(c["d_model"])
            self.head = nn.Linear(c["d_model"], c["vocab"], bias=False)
            self.head.weight = self.tok.weight  # tied, as in GPT-2

        def forward(self, idx, caches=None, start=0):
            B, T = idx.shape
            pos = torch.arange(start, start + T, dtype=torch.long)
            x = self.drop(self.tok(idx) + self.pos(pos))
            for i, blk in enumerate(self.blocks):
                x = blk(x, None if caches is None else caches[i])
            return self.head(self.ln_f(x))

    return GPTModel()


def run_gpt_train_step(torch):
    F = torch.nn.functional
    model = build_gpt(torch, GPT["dropout"])
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=TRAIN["lr"], weight_decay=0.1,
                            fused=True)
    B, T = TRAIN["batch"], TRAIN["seq"]
    for _ in range(TRAIN["steps"]):
        data = torch.randint(0, GPT["vocab"], (B, T + 1))
        x, y = data[:, :-1], data[:, 1:]
        logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss.item()
        del data, x, y, logits, loss
    n = sum(p.numel() for p in model.parameters())
    return {"param_bytes": 4 * n, "keep": (model, opt)}


def run_gpt_generate(torch):
    F = torch.nn.functional
    model = build_gpt(torch, 0.0)
    model.eval()
    B = GEN["batch"]
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        idx = torch.randint(0, GPT["vocab"], (B, GEN["prompt"]), generator=gen)
        caches = [[None, None] for _ in range(GPT["n_layer"])]
        logits = model(idx, caches, 0)  # prefill
        out = idx
        for _ in range(GEN["new_tokens"]):
            probs = F.softmax(logits[:, -1, :] / GEN["temperature"], dim=-1)
            nxt = torch.multinomial(probs, 1, generator=gen)
            out = torch.cat([out, nxt], dim=1)
            logits = model(nxt, caches, out.size(1) - 1)
        del logits, caches
    n = sum(p.numel() for p in model.parameters())
    return {"param_bytes": 4 * n, "keep": model}


def run_cnn_infer(torch):
    nn = torch.nn
    F = torch.nn.functional

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, x):
            y = F.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            return F.relu(y + (x if self.down is None else self.down(x)))

    w = CNN["widths"]
    layers = [nn.Conv2d(3, w[0], 7, 2, 3, bias=False), nn.BatchNorm2d(w[0]),
              nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = w[0]
    for i, cout in enumerate(w):
        stride = 1 if i == 0 else 2
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 1000)]
    model = nn.Sequential(*layers).eval()
    with torch.no_grad():
        for _ in range(CNN["batches"]):
            x = torch.randn(CNN["batch"], 3, CNN["image"], CNN["image"])
            probs = model(x).softmax(-1)
            probs.argmax(-1).tolist()
            del x, probs
    n = sum(p.numel() for p in model.parameters())
    return {"param_bytes": 4 * n, "keep": model}


DESCRIPTIONS = {
    "gpt_train_step": (
        "GPT decoder (layers %(n_layer)d, d_model %(d_model)d, heads %(n_head)d, "
        "vocab %(vocab)d, tied embedding, dropout %(dropout)s)" % GPT
        + " built inside the profiler, then %(steps)d steps of forward + "
        "cross-entropy + backward + AdamW(fused) + zero_grad(set_to_none), "
        "batch %(batch)d x %(seq)d tokens, fp32" % TRAIN),
    "gpt_generate": (
        "same GPT built inside the profiler, then under no_grad: "
        "prefill of %(prompt)d tokens and %(new_tokens)d sampled tokens, batch "
        "%(batch)d, KV cache grown by torch.cat each token, fp32" % GEN),
    "cnn_infer": (
        "ResNet-like conv net (BasicBlocks, widths %s, BatchNorm, eval) built "
        "inside the profiler, then %d batches of %d x 3 x %d x %d images "
        "under no_grad, fp32" % ("/".join(map(str, CNN["widths"])), CNN["batches"],
                                 CNN["batch"], CNN["image"], CNN["image"])),
}

RUNNERS = {
    "gpt_train_step": run_gpt_train_step,
    "gpt_generate": run_gpt_generate,
    "cnn_infer": run_cnn_infer,
}


# ---------------------------------------------------------------------------
# Profiling and conversion
# ---------------------------------------------------------------------------

class TraceError(Exception):
    pass


def profile_workload(torch, name):
    """Runs one workload under the profiler; returns (memory events, info)."""
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    torch.manual_seed(0)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        info = RUNNERS[name](torch)
    fd, path = tempfile.mkstemp(suffix=".json", prefix="record_traces_")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path) as f:
            data = json.load(f)
    finally:
        os.unlink(path)
    events = data["traceEvents"] if isinstance(data, dict) else data
    mem = [e for e in events if e.get("name") == "[memory]"]
    return mem, info


def convert(mem_events):
    """Turns profiler [memory] events into (records, stats).

    records: list of ("a", id, bytes, stream) and ("f", id).
    """
    order = sorted(range(len(mem_events)),
                   key=lambda i: (float(mem_events[i]["ts"]),
                                  int(mem_events[i]["args"].get("Ev Idx", 0)), i))
    live = {}            # addr -> (id, bytes)
    records = []
    sizes = []
    live_bytes = 0
    peak = 0
    dropped = 0
    baseline = None
    max_total = None
    max_gap = 0          # |trace live bytes - (Total Allocated - baseline)|
    device_types = set()
    tids = set()
    for i in order:
        e = mem_events[i]
        a = e["args"]
        addr = int(a["Addr"])
        nbytes = int(a["Bytes"])
        total = int(a["Total Allocated"])
        device_types.add(int(a.get("Device Type", 0)))
        tids.add(e.get("tid"))
        if baseline is None:
            baseline = total - nbytes
        max_total = total if max_total is None else max(max_total, total)
        if nbytes > 0:
            if addr in live:
                raise TraceError("alloc of %d bytes at live address %#x (id %d): a free "
                                 "was not reported" % (nbytes, addr, live[addr][0]))
            aid = len(sizes)
            sizes.append(nbytes)
            live[addr] = (aid, nbytes)
            records.append(("a", aid, nbytes, 0))
            live_bytes += nbytes
            peak = max(peak, live_bytes)
        elif nbytes < 0:
            if addr not in live:
                dropped += 1       # allocated before profiling started
                continue
            aid, size = live.pop(addr)
            if size != -nbytes:
                raise TraceError("free of id %d at %#x reports %d bytes, allocated %d"
                                 % (aid, addr, -nbytes, size))
            records.append(("f", aid))
            live_bytes -= size
        else:
            continue  # zero-byte events carry nothing to replay
        max_gap = max(max_gap, abs(live_bytes - (total - baseline)))
    if device_types - {0}:
        raise TraceError("non-CPU memory events (device types %s)" % sorted(device_types))
    stats = {
        "events": len(records),
        "allocations": len(sizes),
        "frees": len(records) - len(sizes),
        "live_at_end": len(live),
        "live_bytes_at_end": live_bytes,
        "peak_live_bytes": peak,
        "dropped_frees": dropped,
        "profiler_events": len(mem_events),
        "profiler_baseline_bytes": baseline or 0,
        "profiler_peak_bytes": (max_total - baseline) if mem_events else 0,
        "max_live_bytes_mismatch": max_gap,
        "threads": len(tids),
        "sizes": sizes,
    }
    if dropped == 0 and (max_gap != 0 or stats["profiler_peak_bytes"] != peak):
        raise TraceError("trace live bytes disagree with the profiler's Total Allocated "
                         "(max mismatch %d, peaks %d vs %d)"
                         % (max_gap, peak, stats["profiler_peak_bytes"]))
    return records, stats


def percentile(sorted_vals, p):
    if not sorted_vals:
        return 0
    k = min(len(sorted_vals) - 1, max(0, int(round(p / 100.0 * (len(sorted_vals) - 1)))))
    return sorted_vals[k]


def size_summary(sizes):
    s = sorted(sizes)
    return {"min": s[0], "median": percentile(s, 50), "p99": percentile(s, 99),
            "max": s[-1], "distinct": len(set(s)),
            "le_1MiB": sum(1 for x in s if x <= 1 << 20)}


def write_trace(path, name, records, stats, torch_version, extra):
    ss = size_summary(stats["sizes"])
    header = [
        FORMAT_MAGIC,
        "workload: " + name,
        "description: " + DESCRIPTIONS[name],
        "torch: " + torch_version,
        "python: " + platform.python_version(),
        "recorded: " + datetime.datetime.now(datetime.timezone.utc)
        .strftime("%Y-%m-%dT%H:%M:%SZ"),
        "recorder: tools/record_traces.py (torch.profiler, CPU, profile_memory=True, "
        "1 thread)",
        "device: cpu; stream is always 0 (the CPU has no streams)",
        "format: 'a <id> <bytes> <stream>' allocates, 'f <id>' frees; ids 0.. in "
        "allocation order; bytes as requested (no rounding)",
        "events: %d" % stats["events"],
        "allocations: %d" % stats["allocations"],
        "frees: %d" % stats["frees"],
        "live_at_end: %d" % stats["live_at_end"],
        "live_bytes_at_end: %d" % stats["live_bytes_at_end"],
        "peak_live_bytes: %d" % stats["peak_live_bytes"],
        "dropped_frees: %d (frees of blocks allocated before profiling)"
        % stats["dropped_frees"],
        "profiler_peak_bytes: %d (max Total Allocated - its value before the first "
        "event)" % stats["profiler_peak_bytes"],
        "size_bytes: min %d median %d p99 %d max %d distinct %d"
        % (ss["min"], ss["median"], ss["p99"], ss["max"], ss["distinct"]),
        "model_param_bytes: %d" % extra["param_bytes"],
    ]
    with open(path, "w") as f:
        for h in header:
            f.write(h if h.startswith("#") else "# " + h)
            f.write("\n")
        for r in records:
            if r[0] == "a":
                f.write("a %d %d %d\n" % (r[1], r[2], r[3]))
            else:
                f.write("f %d\n" % r[1])


def check_trace(path):
    """Parses a trace file as a replayer would and checks it; returns stats."""
    header = {}
    live = {}
    sizes = []
    events = frees = live_bytes = peak = 0
    with open(path) as f:
        first = f.readline().rstrip("\n")
        if first != FORMAT_MAGIC:
            raise TraceError("%s: first line is not %r" % (path, FORMAT_MAGIC))
        for lineno, line in enumerate(f, 2):
            line = line.rstrip("\n")
            if line.startswith("#"):
                if ":" in line:
                    k, v = line[1:].split(":", 1)
                    header[k.strip()] = v.strip()
                continue
            parts = line.split()
            where = "%s:%d" % (path, lineno)
            if parts[0] == "a" and len(parts) == 4:
                aid, nbytes, stream = int(parts[1]), int(parts[2]), int(parts[3])
                if aid != len(sizes) or nbytes <= 0 or stream != 0:
                    raise TraceError("%s: bad alloc %r" % (where, line))
                sizes.append(nbytes)
                live[aid] = nbytes
                live_bytes += nbytes
                peak = max(peak, live_bytes)
            elif parts[0] == "f" and len(parts) == 2:
                aid = int(parts[1])
                if aid not in live:
                    raise TraceError("%s: free of id %d, which is not live" % (where, aid))
                live_bytes -= live.pop(aid)
                frees += 1
            else:
                raise TraceError("%s: malformed line %r" % (where, line))
            events += 1
    got = {"events": events, "allocations": len(sizes), "frees": frees,
           "live_at_end": len(live), "live_bytes_at_end": live_bytes,
           "peak_live_bytes": peak}
    for k, v in got.items():
        if int(header.get(k, "-1").split()[0]) != v:
            raise TraceError("%s: header %s is %s, the records give %d"
                             % (path, k, header.get(k), v))
    got["sizes"] = sizes
    got["header"] = header
    return got


# ---------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------

def fmt_bytes(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.2f %s" % (n, unit))
        n /= 1024.0


def summarize(path, st):
    ss = size_summary(st["sizes"])
    return {
        "file": os.path.basename(path), "file_bytes": os.path.getsize(path),
        "events": st["events"], "allocations": st["allocations"],
        "frees": st["frees"], "live_at_end": st["live_at_end"],
        "live_bytes_at_end": st["live_bytes_at_end"],
        "peak_live_bytes": st["peak_live_bytes"], **ss,
        "param_bytes": int(st["header"].get("model_param_bytes", "0")),
        "torch": st["header"].get("torch", "?"),
        "description": st["header"].get("description", ""),
    }


README_HEAD = """# Allocation traces of real PyTorch workloads

Recorded by [`tools/record_traces.py`](../../../tools/record_traces.py) (its docstring is
the reference) for swapalloc's trace-replay tests and `BM_Replay` benchmark. Each
workload ran on the CPU in a fresh process under
`torch.profiler.profile(activities=[ProfilerActivity.CPU], profile_memory=True)`, with
one thread and fixed seeds; the profiler's `[memory]` events (address, signed size) were
converted, in time order, into allocs and frees matched by address into allocation ids.

## Format (`*.trace`, v1)

```
# swapalloc allocation trace v1      <- always the first line
# <key>: <value>                     <- header: workload, torch, events, peak_live_bytes, ...
a <id> <bytes> <stream>              <- allocate <bytes>; ids are 0, 1, 2, ... in order
f <id>                               <- free allocation <id> (of the size it was allocated with)
```

* Every line starting with `#` is a comment; all numbers are decimal integers.
* `<stream>` is always `0`: the CPU has no streams, so each trace is single-stream.
* `<bytes>` is the size PyTorch asked for (tensor `nbytes`), not rounded; a replayer
  rounds as the allocator under test would (PyTorch's CUDA allocator rounds to 512 B).
* Frees of blocks allocated before profiling began are dropped (`dropped_frees`, 0 in
  all traces here). Blocks still live when profiling stopped are left live
  (`live_at_end`, `live_bytes_at_end`): the model's weights, and for training the
  optimizer states.
* `peak_live_bytes` is the maximum of the running sum of live bytes over the trace. The
  recorder checked it, at every event, against the profiler's own `Total Allocated`
  counter (minus its value before the first event) — they agree exactly — and checked
  that every free names a live id with the allocation's size.

## Traces

| trace | events | allocations | live at end | peak live | size min / median / p99 / max | distinct sizes | ≤ 1 MiB | file |
|---|---:|---:|---:|---:|---|---:|---:|---:|
"""


def write_readme(out, summaries, command):
    lines = [README_HEAD]
    for s in summaries:
        lines.append(
            "| `%s` | %d | %d | %d (%s) | %s | %s / %s / %s / %s | %d | %.0f%% | %s |\n" % (
                s["file"], s["events"], s["allocations"], s["live_at_end"],
                fmt_bytes(s["live_bytes_at_end"]), fmt_bytes(s["peak_live_bytes"]),
                fmt_bytes(s["min"]), fmt_bytes(s["median"]), fmt_bytes(s["p99"]),
                fmt_bytes(s["max"]), s["distinct"],
                100.0 * s["le_1MiB"] / max(1, s["allocations"]),
                fmt_bytes(s["file_bytes"])))
    lines.append("\nWorkloads (model parameters in fp32):\n\n")
    for s in summaries:
        lines.append("* `%s` — %s. Parameters: %s.\n"
                     % (s["file"], s["description"], fmt_bytes(s["param_bytes"])))
    lines.append("""
What to expect in them:

* `gpt_train_step`: the weights (token embedding 8 MiB, tied with the output head;
  256x768, 256x1024, ... matrices) are allocated first; gradients appear at the first
  backward and are freed by `zero_grad(set_to_none=True)` every step; the AdamW
  `exp_avg`/`exp_avg_sq` states appear at the first `step()` and stay live; the logits
  (4 x 128 x 8192 fp32 = 16 MiB) and their gradient are the largest blocks. Live at
  end = weights + `exp_avg` + `exp_avg_sq` (3 x the parameter bytes) + 52 step
  counters of 4 B. (An 8 MiB block is allocated and freed early on: the output
  head's own weight, replaced by the tied embedding.)
* `gpt_generate`: the prefill's activations, then per token and layer a new key and a
  new value cache tensor (`torch.cat`) one position longer than the previous, which is
  freed: the KV cache blocks grow from 2x8x32x32x4 B = 64 KiB to 2x8x96x32x4 B =
  192 KiB in 2 KiB steps (each size 8 times: 4 layers x key, value). Most allocations
  are small (activations of one token: 2 KiB; LayerNorm's mean/rstd: 8 B). Live at
  end = the weights.
* `cnn_infer`: a different size mix — image activations of 128 KiB to 4 MiB, the conv
  weights (up to 2.25 MiB), BatchNorm buffers. Live at end = parameters and buffers.

CPU-specific effects (a CUDA run of the same model would differ):

* Python scalars in arithmetic with a tensor become an 8 B wrapped tensor, and often a
  4 B cast of it, allocated and freed at once. On CUDA those stay host tensors and
  never reach the device allocator. With torch 2.15 this is the case for 312 of
  `gpt_train_step`'s allocations (fused AdamW's `step += 1` runs per tensor on the CPU),
  about 500 of `gpt_generate`'s (temperature, `multinomial`'s checks) and 6 of
  `cnn_infer`'s. They are kept: they only add short-lived tiny blocks.
* Other tiny blocks are real on CUDA too: LayerNorm's mean/rstd, `multinomial`'s
  validity checks, the loss's `total_weight`, AdamW's 4 B step counters, BatchNorm's
  `num_batches_tracked`.
* Sizes are as requested; PyTorch's CUDA allocator would round them (512 B, 2 MiB
  segments). BLAS/oneDNN scratch memory on the CPU bypasses the PyTorch allocator,
  whereas cuBLAS workspaces would come from it. Attention uses the CPU flash kernel
  (`_scaled_dot_product_flash_attention_for_cpu`), so no T x T matrix is allocated, as
  with flash attention on CUDA.

## How they were made

```
%s
```

Python and torch versions are in each file's header (`torch:`, `python:`). Rerunning
with the same torch build gives the same records (only the `recorded:` date changes);
another torch version may change the kernels' temporaries and so the traces.
""" % command)
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write("".join(lines))


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------

def worker(name, path):
    torch = import_torch()
    mem, info = profile_workload(torch, name)
    records, stats = convert(mem)
    write_trace(path, name, records, stats, torch.__version__, info)
    print(json.dumps({k: v for k, v in stats.items() if k != "sizes"}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="tests/data/traces",
                    help="directory for the .trace files and README.md")
    ap.add_argument("--only", action="append", choices=WORKLOADS,
                    help="record only this workload (repeatable)")
    ap.add_argument("--check", metavar="DIR",
                    help="only validate the .trace files in DIR")
    ap.add_argument("--worker", nargs=2, metavar=("WORKLOAD", "PATH"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        worker(*args.worker)
        return

    if args.check:
        traces = sorted(fn for fn in os.listdir(args.check) if fn.endswith(".trace"))
        if not traces:
            sys.exit("record_traces.py: --check %s: no .trace files there" % args.check)
        for fn in traces:
            p = os.path.join(args.check, fn)
            try:
                print(json.dumps(summarize(p, check_trace(p))))
            except TraceError as e:
                sys.exit("record_traces.py: invalid trace: %s" % e)
        return

    import_torch()  # fail early, with the message, before any work
    os.makedirs(args.out, exist_ok=True)
    names = args.only or list(WORKLOADS)
    summaries = []
    for name in names:
        path = os.path.join(args.out, name + ".trace")
        # A fresh process per workload: the CPU profiler's bookkeeping of live blocks
        # outlives a profiling session, and a fresh process makes each trace independent.
        r = subprocess.run([sys.executable, os.path.abspath(__file__),
                            "--worker", name, path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True)
        if r.returncode != 0:
            sys.stderr.write(r.stderr)
            sys.exit("record_traces.py: workload %s failed" % name)
        conv = json.loads(r.stdout.strip().splitlines()[-1])
        st = check_trace(path)
        s = summarize(path, st)
        summaries.append(s)
        print("%-15s events %7d  allocs %6d  live@end %4d (%s)  peak %s  "
              "profiler peak %s  sizes %s..%s (median %s, p99 %s)  dropped frees %d  "
              "threads %d  file %s" % (
                  name, s["events"], s["allocations"], s["live_at_end"],
                  fmt_bytes(s["live_bytes_at_end"]), fmt_bytes(s["peak_live_bytes"]),
                  fmt_bytes(conv["profiler_peak_bytes"]), fmt_bytes(s["min"]),
                  fmt_bytes(s["max"]), fmt_bytes(s["median"]), fmt_bytes(s["p99"]),
                  conv["dropped_frees"], conv["threads"], fmt_bytes(s["file_bytes"])))
    if set(names) == set(WORKLOADS):
        write_readme(args.out, summaries,
                     "python3 tools/record_traces.py --out %s" % args.out)


if __name__ == "__main__":
    main()
