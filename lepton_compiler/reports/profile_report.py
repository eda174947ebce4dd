"""Profile reports: ``lepton profile out.lepton [--mode sim|fast] [--html report.html]``.

The HTML report is one self-contained file (inline SVG, inline CSS, no script, no server):
totals, a per-kernel bar chart (cycles in sim mode, milliseconds in fast mode), a roofline
plot of the NPU kernels (sim mode) and the full per-kernel table. It is well-formed XHTML, so
any XML parser can check it.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

import numpy as np

COLORS = {"npu": "#4c9f38", "host": "#d9822b"}


def example_inputs(session: Any, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded random inputs matching a session's signature (normal floats, full-range ints)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in session.inputs:
        dtype = np.dtype(spec.dtype)
        if np.issubdtype(dtype, np.floating):
            arrays[spec.name] = rng.standard_normal(spec.shape).astype(dtype)
        elif dtype == np.bool_:
            arrays[spec.name] = rng.integers(0, 2, spec.shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            arrays[spec.name] = rng.integers(max(info.min, -128), min(info.max, 127) + 1,
                                             spec.shape).astype(dtype)
    return arrays


def _fmt(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _bars(rows: list[dict], key: str, unit: str) -> str:
    """A horizontal bar per kernel, coloured by unit (NPU or host)."""
    height, label_w, width = 16, 260, 440
    peak = max((r[key] for r in rows), default=0) or 1
    total_h = height * len(rows) + 30
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + width + 90}" '
             f'height="{total_h}" class="chart">']
    for i, r in enumerate(rows):
        y = 10 + i * height
        w = max(r[key] / peak * width, 0.5 if r[key] else 0)
        name = r["layer"] or r["kernel"]
        parts.append(f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">'
                     f'{escape(name[:40])}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 2}" width="{w:.2f}" height="{height - 4}" '
                     f'fill="{COLORS.get(r["unit"], "#888")}"><title>{escape(r["kernel"])}: '
                     f'{_fmt(r[key])} {unit}</title></rect>')
        parts.append(f'<text x="{label_w + w + 4:.2f}" y="{y + 12}">{_fmt(r[key])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _roofline(profile: dict) -> str:
    """Log-log roofline: achieved MACs/cycle vs MACs per DRAM byte, one point per NPU kernel."""
    peak, bw = profile["peak_macs_per_cycle"], profile["dma_bytes_per_cycle"]
    points = [(r["macs_useful"] / r["dram_bytes"], r["macs_useful"] / r["cycles"], r)
              for r in profile["kernels"]
              if r["cycles"] and r["dram_bytes"] and r["macs_useful"]]
    if not (peak and bw and points):
        return "<p>No NPU kernel ran in sim mode, so there is no roofline to draw.</p>"
    w, h, pad = 560, 340, 50
    xs = [p[0] for p in points] + [peak / bw]
    x_lo = 10 ** math.floor(math.log10(min(xs) / 2))
    x_hi = 10 ** math.ceil(math.log10(max(xs) * 2))
    y_lo = 10 ** math.floor(math.log10(min(p[1] for p in points) / 2))
    y_hi = 10 ** math.ceil(math.log10(peak * 2))

    def px(x: float) -> float:
        return pad + (math.log10(x) - math.log10(x_lo)) / math.log10(x_hi / x_lo) * (w - 2 * pad)

    def py(y: float) -> float:
        return h - pad - (math.log10(y) - math.log10(y_lo)) / math.log10(y_hi / y_lo) \
            * (h - 2 * pad)

    ridge = peak / bw
    roof = [(x_lo, max(bw * x_lo, y_lo)), (ridge, peak), (x_hi, peak)]
    if bw * x_lo < y_lo:
        roof[0] = (y_lo / bw, y_lo)
    path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in roof)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" class="chart">',
             f'<rect x="{pad}" y="{pad}" width="{w - 2 * pad}" height="{h - 2 * pad}" '
             'fill="none" stroke="#999"/>',
             f'<polyline points="{path}" fill="none" stroke="#333" stroke-width="2"/>']
    decade = x_lo
    while decade <= x_hi:
        parts.append(f'<text x="{px(decade):.1f}" y="{h - pad + 16}" text-anchor="middle">'
                     f'{decade:g}</text>')
        decade *= 10
    decade = y_lo
    while decade <= y_hi:
        parts.append(f'<text x="{pad - 6}" y="{py(decade) + 4:.1f}" text-anchor="end">'
                     f'{decade:g}</text>')
        decade *= 10
    parts.append(f'<text x="{w / 2}" y="{h - 10}" text-anchor="middle">useful MACs per DRAM '
                 'byte</text>')
    parts.append(f'<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" '
                 'text-anchor="middle">MACs per cycle</text>')
    parts.append(f'<text x="{px(ridge) + 6:.1f}" y="{py(peak) - 6:.1f}">peak {peak} MACs/cycle, '
                 f'{bw} B/cycle</text>')
    for x, y, r in points:
        parts.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="4" fill="{COLORS["npu"]}">'
                     f'<title>{escape(r["layer"] or r["kernel"])}: {y:.1f} MACs/cycle, '
                     f'{r["utilisation"]:.0%} of peak</title></circle>')
    parts.append("</svg>")
    return "".join(parts)


def render_html(profile: Any, title: str) -> str:
    """The profile as one self-contained XHTML page (see the module docstring)."""
    data = profile.to_dict()
    rows = data["kernels"]
    sim = data["mode"] == "sim" and data["totals"]["cycles"] > 0
    totals = data["totals"]
    npu = [r for r in rows if r["unit"] == "npu"]
    summary = [("mode", data["mode"]), ("kernel calls", len(rows)),
               ("NPU kernel calls", len(npu)), ("wall time", f"{totals['time_ms']:.3f} ms"),
               ("MACs", _fmt(totals["macs"]))]
    if sim:
        host = sum(r["cycles"] for r in rows if r["unit"] != "npu")
        summary += [("cycles", f"{totals['cycles']:,} (NPU {totals['cycles'] - host:,}, host "
                               f"fallbacks {host:,} at the spec's stated host cost)"),
                    ("NPU MAC utilisation", f"{totals['utilisation']:.1%}"),
                    ("DRAM bytes", f"{totals['dram_bytes']:,}")]
        if data["clock_hz"]:
            summary.append(("time at the NPU clock",
                            f"{totals['cycles'] / data['clock_hz'] * 1e3:.3f} ms"))
    head = ["#", "kernel", "layer", "ops", "unit", "time ms", "MACs"]
    if sim:
        head += ["cycles", "roofline cycles", "utilisation", "DRAM bytes"]
    body = []
    for r in rows:
        cells = [r["index"], r["kernel"], r["layer"], "+".join(r["ops"]), r["unit"],
                 f"{r['time_ms']:.3f}", f"{r['macs']:,}"]
        if sim:
            cells += [f"{r['cycles']:,}", f"{r['roofline_cycles']:,.0f}",
                      f"{r['utilisation']:.1%}" if r["cycles"] else "",
                      f"{r['dram_bytes']:,}"]
        body.append("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in cells) + "</tr>")
    bar_key, bar_unit = ("cycles", "cycles") if sim else ("time_ms", "ms")
    bar_rows = [r for r in rows if r[bar_key]] if sim else rows
    sections = [
        f"<h1>{escape(title)}</h1>",
        "<table class='summary'>" + "".join(
            f"<tr><th>{escape(k)}</th><td>{escape(str(v))}</td></tr>" for k, v in summary)
        + "</table>",
        f"<h2>Per kernel ({bar_unit})</h2>",
        "<p><span class='npu'>NPU</span> <span class='host'>host</span></p>",
        _bars(bar_rows, bar_key, bar_unit),
        "<h2>Roofline (NPU kernels)</h2>",
        _roofline(data) if sim else "<p>Profile in sim mode (<code>--mode sim</code>) for "
                                    "NPU cycles and the roofline.</p>",
        "<h2>Kernels</h2>",
        "<table class='kernels'><thead><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head)
        + "</tr></thead><tbody>" + "".join(body) + "</tbody></table>",
    ]
    style = ("body{font-family:sans-serif;margin:2em;color:#222}"
             "table{border-collapse:collapse;font-size:13px}"
             "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}"
             ".chart text{font-size:11px;font-family:sans-serif}"
             ".npu{background:#4c9f38;color:#fff;padding:0 4px}"
             ".host{background:#d9822b;color:#fff;padding:0 4px}")
    return ("<!DOCTYPE html>\n<html xmlns=\"http://www.w3.org/1999/xhtml\" lang=\"en\">"
            f"<head><meta charset=\"utf-8\"/><title>{escape(title)}</title>"
            f"<style>{style}</style></head><body>" + "".join(sections) + "</body></html>\n")


def run_profile_command(args: Any, load_inputs: Any) -> int:
    """``lepton profile``: profile an artifact, print the table, write HTML/JSON."""
    import json
    from pathlib import Path

    import lepton_runtime

    session = lepton_runtime.load(args.artifact, mode=args.mode)
    inputs = example_inputs(session, args.seed)
    inputs.update(load_inputs(session, args.input or []))
    session.run(**inputs)  # warm-up: first-touch page faults are not the kernels' time
    profile = session.profile(**inputs)
    print(profile.table())
    if args.html:
        Path(args.html).write_text(render_html(profile, f"Lepton profile: {args.artifact}"),
                                   encoding="utf-8")
        print(f"wrote {args.html}")
    if args.json:
        Path(args.json).write_text(json.dumps(profile.to_dict(), indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0
