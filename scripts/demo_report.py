"""The HTML report of `make demo`: per round, accuracy on the old and the new activities,
forgetting, and training time of the incremental run against a full retrain, as tables and
inline SVG bar charts (no plotting package, no files beside the page)."""

from __future__ import annotations

import html
import json
from pathlib import Path

COLOURS = {"production before": "#9aa5b1", "incremental": "#2b6cb0", "full retrain": "#dd6b20"}


def _bars(title: str, groups: list[tuple[str, dict[str, float]]], unit: str, top: float | None = None) -> str:
    """A grouped bar chart: one group per round, one bar per series."""
    series = [name for name in COLOURS if any(name in values for _, values in groups)]
    top = top or max([v for _, values in groups for v in values.values()] + [1e-9]) * 1.15
    width, height, left, bottom = 560, 240, 48, 36
    group_w = (width - left - 10) / max(len(groups), 1)
    bar_w = group_w * 0.8 / max(len(series), 1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" role="img" '
             f'aria-label="{html.escape(title)}">', f'<text x="{left}" y="14" font-size="13">{html.escape(title)}</text>']
    for tick in range(5):
        value = top * tick / 4
        y = height - bottom - (height - bottom - 24) * tick / 4
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e8f0"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="10" text-anchor="end">{value:.2g}{unit}</text>')
    for g, (label, values) in enumerate(groups):
        x0 = left + g * group_w + group_w * 0.1
        for s, name in enumerate(series):
            if name not in values:
                continue
            h = (height - bottom - 24) * values[name] / top
            x, y = x0 + s * bar_w, height - bottom - h
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
                         f'fill="{COLOURS[name]}"><title>{html.escape(name)}: {values[name]:.3f}{unit}</title></rect>')
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{y - 3:.1f}" font-size="9" text-anchor="middle">'
                         f'{values[name]:.2f}</text>')
        parts.append(f'<text x="{x0 + group_w * 0.4:.1f}" y="{height - bottom + 16}" font-size="11" '
                     f'text-anchor="middle">{html.escape(label)}</text>')
    for s, name in enumerate(series):
        parts.append(f'<rect x="{left + s * 150}" y="{height + 8}" width="10" height="10" fill="{COLOURS[name]}"/>'
                     f'<text x="{left + s * 150 + 14}" y="{height + 17}" font-size="11">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_report(path: Path, rounds: list[dict]) -> Path:
    later = [r for r in rounds if r["round"] > 0]
    rows = []
    for r in later:
        rows.append(
            f"<tr><td>{r['round']}</td><td>v{r['version']}</td><td>{html.escape(r['new_class'])}</td>"
            f"<td>{r['reviewed']['accepted']} / {r['reviewed']['corrected']}</td>"
            f"<td>{r['old_before']:.3f}</td><td>{r['old_after']:.3f}</td><td>{r['forgetting']:+.3f}</td>"
            f"<td>{r['new_after']:.3f}</td><td>{r['accuracy']:.3f}</td><td>{r['full_accuracy']:.3f}</td>"
            f"<td>{r['incremental_seconds']:.1f}</td><td>{r['full_seconds']:.1f}</td>"
            f"<td>{r['full_seconds'] / r['incremental_seconds']:.2f}</td>"
            f"<td>{r['incremental_samples']} / {r['full_samples']}</td></tr>")
    first = rounds[0]
    charts = [
        _bars("Accuracy on the activities known before the round (forgetting = the drop)",
              [(f"round {r['round']}", {"production before": r["old_before"], "incremental": r["old_after"],
                                        "full retrain": _mean_of(r["full_per_class"], r["old_classes"])}) for r in later],
              "", top=1.05),
        _bars("Accuracy on the new activity",
              [(f"round {r['round']}", {"incremental": r["new_after"],
                                        "full retrain": r["full_per_class"].get(r["new_class"], 0.0)}) for r in later],
              "", top=1.05),
        _bars("Training time (seconds, same data, same machine)",
              [(f"round {r['round']}", {"incremental": r["incremental_seconds"], "full retrain": r["full_seconds"]})
               for r in later], " s"),
    ]
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>train-platform demo report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #cbd5e0;padding:.3em .6em;text-align:right}}th{{background:#edf2f7}}svg{{margin:1em 0;display:block}}</style>
</head><body>
<h1>train-platform: the loop, two rounds of new data</h1>
<p>Round 0 trained v{first['version']} on {html.escape(', '.join(first['classes']))}: held-out accuracy
{first['accuracy']:.3f}. In each later round, recordings of a new activity arrived in the intake bucket,
were pre-labelled, checked, sampled and confirmed by a <strong>simulated</strong> reviewer through the
review page's API; the approved merge started incremental training (replay + EWC + distillation), whose
candidate passed the gate, ran an A/B phase and was promoted by the deployment step. "Full retrain" is
the same training code from scratch on the same confirmed labels, run right after, evaluated on the same
held-out recordings. Training times are ml.train's own (<code>train_seconds_this_process</code>: the training
loop, without the process start) on both sides; the incremental run also passes its samples through the previous
model for distillation, counted in its samples.</p>
<table><tr><th>round</th><th>version</th><th>new activity</th><th>accepted / corrected</th>
<th>old activities before</th><th>old after</th><th>forgetting</th><th>new activity after</th>
<th>accuracy (all)</th><th>full retrain accuracy</th><th>incremental s</th><th>full retrain s</th>
<th>full / incremental time</th><th>samples through the model, incremental / full</th></tr>
{''.join(rows)}</table>
{''.join(charts)}
<h2>Raw figures</h2><pre>{html.escape(json.dumps(rounds, indent=2, default=str))}</pre>
</body></html>
"""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page)
    return path


def _mean_of(values: dict[str, float], keys: list[str]) -> float:
    found = [values[k] for k in keys if k in values]
    return sum(found) / len(found) if found else 0.0
