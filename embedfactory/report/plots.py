"""Pictures where people would rather look than read: the training loss curve, base vs fine-tuned
scores per evaluation set, and a run's attribute shares against the recipe's. Each returns PNG bytes
(matplotlib, no display needed); the caller stores them beside the JSON they draw."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

DPI = 110


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=DPI)
    plt.close(fig)
    return buffer.getvalue()


def loss_curve(losses: list[float], title: str = "training loss") -> bytes:
    """The loss per step, with a moving average over a tenth of the steps when there are many."""
    fig, ax = plt.subplots(figsize=(6, 3.2))
    steps = range(1, len(losses) + 1)
    ax.plot(steps, losses, lw=0.8, alpha=0.5 if len(losses) > 20 else 1.0, label="loss",
            marker="o" if len(losses) <= 20 else None)  # a few steps: each one visible
    window = max(len(losses) // 10, 1)
    if window > 1:
        smooth = [sum(losses[max(0, i - window + 1):i + 1]) / len(losses[max(0, i - window + 1):i + 1])
                  for i in range(len(losses))]
        ax.plot(steps, smooth, lw=1.8, label=f"mean of {window} steps")
        ax.legend()
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.grid(alpha=0.3)
    return _png(fig)


def scores_chart(rows: list[dict], title: str = "base vs fine-tuned") -> bytes:
    """Grouped bars per evaluation set (`rows`: set, metric, base, fine_tuned, as `compare` gives)."""
    fig, ax = plt.subplots(figsize=(max(4, 1.6 * len(rows) + 2), 3.4))
    xs = range(len(rows))
    base = [r["base"] for r in rows]
    tuned = [r["fine_tuned"] for r in rows]
    ax.bar([x - 0.2 for x in xs], base, 0.4, label="base")
    ax.bar([x + 0.2 for x in xs], tuned, 0.4, label="fine-tuned")
    for x, b, t in zip(xs, base, tuned):
        ax.annotate(f"{t - b:+.3f}", (x + 0.2, t), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), [f"{r['set']}\n{r['metric']}" for r in rows])
    ax.set(ylabel="score", title=title, ylim=(0, min(1.0, max(base + tuned + [0.1]) * 1.15)))
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def attribute_chart(attributes: dict[str, dict[str, dict[str, dict]]], title: str = "attributes") -> bytes:
    """One panel per (task type, attribute): each value's share in the reference recipe, among the
    prompts drawn and among the rows kept (the quality report's `attributes`)."""
    panels = [(t, a, values) for t, by in attributes.items() for a, values in by.items()]
    if not panels:
        fig, ax = plt.subplots(figsize=(4, 1.5))
        ax.text(0.5, 0.5, "no brainstormed rows", ha="center", va="center")
        ax.axis("off")
        return _png(fig)
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), squeeze=False)
    for ax, (task_type, name, values) in zip(axes.flat, panels):
        values = dict(sorted(values.items(), key=_value_order))
        labels = [str(v)[:14] for v in values]
        xs = range(len(labels))
        for i, (key, shown) in enumerate((("reference", "recipe"), ("drawn", "drawn"), ("kept", "kept"))):
            ax.bar([x + (i - 1) * 0.27 for x in xs], [s[key] for s in values.values()], 0.27, label=shown)
        ax.set_xticks(list(xs), labels, rotation=30 if len(labels) > 3 else 0, fontsize=7, ha="right")
        ax.set_title(f"{task_type}: {name}", fontsize=9)
        ax.set_ylim(0, 1)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(title)
    return _png(fig)


def _value_order(item) -> tuple:
    """Numbers in numeric order (50 before 100), then words as given."""
    try:
        return (0, float(item[0]), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(item[0]))
