"""One table format for every price model (baselines and LLMs), and the truth-vs-prediction scatter plot."""
from __future__ import annotations

from pathlib import Path

from .ensemble import name as ensemble_name
from .task import HIT_DOLLARS, HIT_FRACTION, is_hit

READOUT = "fine-tuned, hidden-state read-out"  # readout.py


def metric_rows(metrics: dict) -> dict[str, dict]:
    """The rows of an evaluation's metrics.json in table order, named as the evaluation prints them and the
    demo shows them: baselines, base model, fine-tuned (greedy), the beam median and mean, the hidden-state
    read-out, the ensemble."""
    rows = dict(metrics.get("baselines", {}))
    if "base" in metrics:
        rows["base model"] = metrics["base"]
    rows["fine-tuned"] = metrics["finetuned"]
    if "finetuned_median" in metrics:
        rows[f"fine-tuned, {metrics['finetuned_median']['beams']}-beam median"] = metrics["finetuned_median"]
    if "finetuned_mean" in metrics:
        rows[f"fine-tuned, {metrics['finetuned_mean']['beams']}-beam mean"] = metrics["finetuned_mean"]
    if "readout" in metrics:
        rows[READOUT] = metrics["readout"]
    if "ensemble" in metrics:  # older metrics.json files blended the fine-tuned model and the ridge only
        ens = metrics["ensemble"]
        rows[ensemble_name(ens.get("members", ("llm", "ridge")), ens.get("chosen", ""))] = ens
    return rows


def table(results: dict[str, dict]) -> str:
    lines = [f"{'model':<48} {'MAE $':>9} {'RMSLE':>7} {'hit rate':>9} {'n':>5} {'unparsed':>9}"]
    for name, m in results.items():
        lines.append(f"{name:<48} {m['mae']:>9.2f} {m['rmsle']:>7.3f} {m['hit_rate'] * 100:>8.1f}% {m['n']:>5} "
                     f"{m['unparsed']:>9}")
    lines.append(f"hit = error under ${HIT_DOLLARS:.0f} or under {HIT_FRACTION:.0%} of the true price; "
                 "an unparsed answer counts as $0")
    return "\n".join(lines)


def scatter(truth: list[float], predictions: list[float | None], title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    preds = [p if p is not None else 0.0 for p in predictions]
    colours = ["tab:green" if p is not None and is_hit(t, p) else "tab:red" for t, p in zip(truth, predictions)]
    top = max([*truth, *preds, 1.0]) * 1.05
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(truth, preds, c=colours, s=10, alpha=0.7)
    ax.plot([0, top], [0, top], color="grey", lw=1, ls="--")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("true price ($)")
    ax.set_ylabel("predicted price ($)")
    ax.set_title(title)
    ax.scatter([], [], c="tab:green", label="hit")
    ax.scatter([], [], c="tab:red", label="miss")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
