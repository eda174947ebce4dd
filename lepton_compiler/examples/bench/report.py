"""The benchmark's outputs: JSON, a markdown table and PNG charts."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any


def _num(value: Any, fmt: str, missing: str = "-") -> str:
    return missing if value is None or value != value else format(value, fmt)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def markdown(results: dict[str, Any]) -> str:
    """The results as markdown: one latency/fidelity table per model, then the sim table."""
    m = results["machine"]
    lines = [f"# Lepton benchmark{' (quick)' if results['quick'] else ''}", "",
             f"{results['date']} · {m['cpu']} · {m['threads']} threads of {m['logical_cpus']} "
             f"· median and min of {results['repeats']} runs after {results['warmup']} "
             "warm-up · ratios are onnxruntime time / system time in the same run "
             "(> 1 is faster)", ""]
    for model, description in results["models"].items():
        lines += [f"## {model}", "", description, "",
                  "| system | median ms | min ms | vs ORT fp32 | vs ORT int8 | compile s | "
                  "peak MB | artifact | max abs err | cosine | top-1 |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in results["rows"]:
            if r["model"] != model:
                continue
            if not r["available"]:
                lines.append(f"| {r['system']} | unavailable: {r['reason']} |||||||||")
                continue
            lines.append(
                f"| {r['system']} | {r['median_ms']:.2f} | {r['min_ms']:.2f} | "
                f"{_num(r.get('vs_onnxruntime_fp32'), '.2f')}x | "
                f"{_num(r.get('vs_onnxruntime_int8'), '.2f')}x | {r['compile_s']:.1f} | "
                f"{_num(r.get('peak_rss_mb'), '.0f')} | {_size(r.get('artifact_bytes'))} | "
                f"{_num(r.get('max_abs_error'), '.2e')} | {_num(r.get('cosine'), '.5f')} | "
                f"{_num(r.get('top1_agreement'), '.1%')} |".replace("-x", "-"))
        lines.append("")
    sims = [r for r in results["rows"] if r.get("available") and "sim" in r]
    if sims:
        lines += ["## Lepton NPU (sim)", "",
                  "| model | NPU MAC share | cycles | ms at clock | MAC utilisation | DRAM MB | "
                  "minimal DRAM MB | roofline cycles | roofline efficiency |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in sims:
            s = r["sim"]
            lines.append(
                f"| {r['model']} | {r['npu_mac_share']:.1%} | {s['cycles']:,} | "
                f"{_num(s['ms_at_clock'], '.3f')} | {s['mac_utilisation']:.1%} | "
                f"{s['dram_bytes'] / 1e6:.2f} | {s['min_dram_bytes'] / 1e6:.2f} | "
                f"{s['roofline_cycles']:,.0f} | {s['roofline_efficiency']:.1%} |")
        lines.append("")
    return "\n".join(lines)


def charts(results: dict[str, Any], stem: Path) -> list[Path]:
    """PNG charts: speed vs onnxruntime fp32 per model and system; sim utilisation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["models"])
    systems = results["systems"]
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(models)), 4))
    width = 0.8 / max(len(systems), 1)
    for j, system in enumerate(systems):
        values = []
        for model in models:
            row = next((r for r in results["rows"]
                        if r["model"] == model and r["system"] == system), None)
            values.append(row.get("vs_onnxruntime_fp32", 0) if row and row["available"] else 0)
        ax.bar([i + j * width for i in range(len(models))], values, width, label=system)
    ax.axhline(1.0, color="#333", linewidth=0.8)
    ax.set_xticks([i + width * (len(systems) - 1) / 2 for i in range(len(models))], models)
    ax.set_yscale("log")
    ax.set_ylabel("speed vs onnxruntime fp32 (x, log)")
    ax.set_title(f"Latency ratios, {results['machine']['threads']} threads")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    paths = [stem.with_name(stem.name + "_speed.png")]
    fig.savefig(paths[0], dpi=110)
    plt.close(fig)
    sims = [r for r in results["rows"] if r.get("available") and "sim" in r]
    if sims:
        fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(sims)), 3.5))
        ax.bar([r["model"] for r in sims], [r["sim"]["mac_utilisation"] for r in sims],
               label="MAC utilisation")
        ax.bar([r["model"] for r in sims], [r["sim"]["roofline_efficiency"] for r in sims],
               width=0.4, label="roofline efficiency")
        ax.set_ylim(0, 1)
        ax.set_title("Lepton NPU (sim)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(stem.with_name(stem.name + "_sim.png"))
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    return paths


def write_outputs(results: dict[str, Any], out: Path) -> list[Path]:
    """Write ``<out>/<date>[_quick].json``, ``.md`` and the charts; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / (dt.date.today().isoformat() + ("_quick" if results["quick"] else ""))
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    md_path.write_text(markdown(results))
    return [json_path, md_path, *charts(results, stem)]
