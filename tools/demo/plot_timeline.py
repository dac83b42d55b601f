#!/usr/bin/env python3
"""Renders the demo's timeline (swapalloc_demo's JSON, tools/demo/timeline.hpp) as a PNG.

One panel per mode, on a shared time axis: the device memory each pool holds, stacked
(MiB), with the limit, the 85% high and 75% low watermarks, a thin line at the start of each
request, and marks along the top for what moved: evictions (v), restores (^), prefetches (D)
and model loads from disk (s), coloured by pool, and an X where a mode ran out of memory.

Usage: plot_timeline.py TIMELINE.json [OUT.png]     (default: TIMELINE with .png)
Exit status: 0 written; 1 the timeline cannot be read or is not the demo's; 2 matplotlib is
missing (tools/install-deps installs it); 64 a bad command line.
"""

import json
import os
import sys

MIB = 1024.0 * 1024.0
# Marks: kind -> (marker, height as a fraction of the panel's top, 1.25 x the limit: above
# the limit line, clear of the stacks; label).
MARKS = {
    "evict": ("v", 0.97, "evict (to the host store)"),
    "restore": ("^", 0.93, "restore (from the host store)"),
    "prefetch": ("D", 0.89, "prefetch"),
    "load": ("s", 0.85, "load (model file read from disk)"),
}
POOL_COLOURS = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860"]


def fail(message, status):
    print(f"plot_timeline: {message}", file=sys.stderr)
    sys.exit(status)


def load(path):
    """The timeline's JSON, checked to be the demo's (format and version)."""
    try:
        with open(path, encoding="utf-8") as handle:
            timeline = json.load(handle)
    except (OSError, ValueError) as error:
        fail(f"{path}: cannot read the timeline: {error}", 1)
    if not isinstance(timeline, dict) or timeline.get("format") != "swapalloc-demo-timeline":
        fail(f"{path}: not a swapalloc demo timeline (no \"format\": \"swapalloc-demo-timeline\")", 1)
    if timeline.get("version") != 1:
        fail(f"{path}: timeline version {timeline.get('version')!r}, expected 1", 1)
    if not timeline.get("modes"):
        fail(f"{path}: the timeline has no modes", 1)
    return timeline


def pool_colours(timeline):
    """One colour per pool name, the same in every panel."""
    names = []
    for mode in timeline["modes"]:
        for name in mode.get("pools", []):
            if name not in names:
                names.append(name)
    return {name: POOL_COLOURS[i % len(POOL_COLOURS)] for i, name in enumerate(names)}


def draw_mode(axes, mode, colours, top):
    """One panel: stacked residency, budget lines, request starts, marks."""
    samples = mode.get("samples", [])
    pools = mode.get("pools", [])
    times = [s["time_s"] for s in samples]
    stacks = [[s["pools"].get(p, {}).get("resident_bytes", 0) / MIB for s in samples] for p in pools]
    if times:
        axes.stackplot(times, stacks, colors=[colours[p] for p in pools], alpha=0.85,
                       linewidth=0, step="post")
    limit = mode.get("limit_bytes", 0) / MIB
    axes.axhline(limit, color="black", linewidth=1.0)
    axes.axhline(limit * mode.get("high_watermark", 0.85), color="#C44E52", linestyle="--",
                 linewidth=1.0)
    axes.axhline(limit * mode.get("low_watermark", 0.75), color="#E1A100", linestyle="--",
                 linewidth=1.0)
    for step in mode.get("steps", []):
        if step["name"].startswith("request ") and step["name"].endswith(": " + pools[0]):
            axes.axvline(step["start_s"], color="#999999", linewidth=0.5, zorder=0)
    for mark in mode.get("marks", []):
        colour = colours.get(mark.get("pool"), "black")
        if mark["kind"] in MARKS:
            marker, height, _ = MARKS[mark["kind"]]
            axes.plot(mark["time_s"], top * height, marker=marker, color=colour, markersize=6,
                      markeredgecolor="black", markeredgewidth=0.4, linestyle="none")
        elif mark["kind"] == "out_of_memory":
            axes.plot(mark["time_s"], limit, marker="X", color="black", markersize=12,
                      linestyle="none")
            axes.annotate("out of memory", (mark["time_s"], limit), xytext=(8, -14),
                          textcoords="offset points", fontsize=9)
    axes.set_ylim(0, top)
    axes.set_ylabel("device MiB")
    axes.set_title(f"{mode['mode']}: {mode.get('result', '')}", loc="left", fontsize=10)
    axes.grid(axis="y", linewidth=0.3)


def legend_handles(colours):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=colour, label=name) for name, colour in colours.items()]
    handles += [
        Line2D([], [], color="black", linewidth=1.0, label="limit"),
        Line2D([], [], color="#C44E52", linestyle="--", label="high watermark (85%)"),
        Line2D([], [], color="#E1A100", linestyle="--", label="low watermark (75%)"),
    ]
    handles += [Line2D([], [], marker=m, color="grey", markeredgecolor="black", linestyle="none",
                       label=label) for m, _, label in MARKS.values()]
    handles.append(Line2D([], [], marker="X", color="black", linestyle="none",
                          label="out of memory"))
    return handles


def render(timeline, out):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        fail("matplotlib is not installed (tools/install-deps installs it): no plot", 2)
    modes = timeline["modes"]
    colours = pool_colours(timeline)
    top = 1.25 * max(m.get("limit_bytes", 0) for m in modes) / MIB
    figure, axes = plt.subplots(len(modes), 1, figsize=(12, 2.6 * len(modes) + 1.2),
                                sharex=True, squeeze=False)
    for row, mode in zip(axes[:, 0], modes):
        draw_mode(row, mode, colours, top)
    axes[-1, 0].set_xlabel("seconds since the mode's first request")
    figure.suptitle(f"swapalloc demo: {timeline.get('scenario', '')}, "
                    f"{timeline.get('requests', '?')} requests, 22 GiB device scaled down "
                    f"{timeline.get('scale', '?')}x ({timeline.get('device_bytes', 0) / MIB:.0f} MiB)",
                    fontsize=11)
    figure.legend(handles=legend_handles(colours), loc="lower center", ncol=6, fontsize=8,
                  frameon=False)
    figure.tight_layout(rect=(0, 0.07 + 0.01 * (4 - min(len(modes), 4)), 1, 0.97))
    figure.savefig(out, dpi=100)
    plt.close(figure)


def main(argv):
    if len(argv) in (2, 3) and argv[1] in ("-h", "--help"):
        print(__doc__)
        return 0
    if len(argv) not in (2, 3) or argv[1].startswith("-"):
        fail("usage: plot_timeline.py TIMELINE.json [OUT.png]", 64)
    source = argv[1]
    out = argv[2] if len(argv) == 3 else os.path.splitext(source)[0] + ".png"
    render(load(source), out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
