"""PNG plots of a comparison: accuracy bars per row, reward and reflection length over training."""

from __future__ import annotations

from pathlib import Path

from r3exp.results.across_runs import COLUMNS, ComparisonRow

LABELS = {
    "base_first_try": "base, first try",
    "base_after_reflection": "base, after reflection",
    "trained_first_try": "trained, first try",
    "trained_after_reflection": "trained, after reflection",
}
COLOURS = {
    "base_first_try": "#c6dbef",
    "base_after_reflection": "#6baed6",
    "trained_first_try": "#fdd0a2",
    "trained_after_reflection": "#e6550d",
}


def _pyplot():
    import matplotlib  # noqa: PLC0415 - matplotlib is optional (r3exp[reports])

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - optional (r3exp[reports]); after matplotlib.use("Agg")

    return plt


def row_label(row: ComparisonRow) -> str:
    return f"{row.model} · {row.task}" + (f"\n{row.setting}" if row.setting else "")


def plot_accuracy(rows: list[ComparisonRow], path: str | Path) -> Path:
    """Grouped bars: one group per row (model × task × setting), four bars, error bars over seeds."""
    plt = _pyplot()
    width = 0.2
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 * len(rows)), 4.2))
    for k, column in enumerate(COLUMNS):
        xs = [i + (k - 1.5) * width for i in range(len(rows))]
        means = [100 * (row.mean(column) or 0.0) for row in rows]
        stds = [100 * (row.std(column) or 0.0) for row in rows]
        ax.bar(xs, means, width, yerr=stds, capsize=3, label=LABELS[column], color=COLOURS[column])
    ax.set_xticks(range(len(rows)), [row_label(row) for row in rows], fontsize=8)
    top = max([100 * ((row.mean(c) or 0.0) + (row.std(c) or 0.0)) for row in rows for c in COLUMNS] + [0.0])
    ax.set_ylim(0, min(100.0, max(10.0, 1.25 * top)))
    ax.set_ylabel("accuracy (%)")
    ax.set_title("First try and after one reflection, base vs trained")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def moving_average(values: list[float | None], window: int) -> list[float | None]:
    """The mean of the last ``window`` defined values at every position (None before the first; missing
    and NaN values are skipped)."""
    out, recent = [], []
    for value in values:
        if value is not None and value == value:
            recent = (recent + [value])[-window:]
        out.append(sum(recent) / len(recent) if recent else None)
    return out


def plot_training(rows: list[ComparisonRow], path: str | Path, window: int = 10) -> Path | None:
    """Reward (R3: retry success of the sampled reflections; GRPO: success of the sampled attempts), the
    retry's follow rate and the reflection length, one line per run, moving averages over ``window``
    steps. The x axis is the tokens sampled for training when the runs recorded them (R3 and GRPO compared
    at equal cost), else the step."""
    runs = [(row, run) for row in rows for run in row.runs if run.curves]
    if not runs:
        return None
    plt = _pyplot()
    by_tokens = all(c.get("sampled_tokens") is not None for _, run in runs for c in run.curves)
    fig, (reward_ax, follow_ax, length_ax) = plt.subplots(1, 3, figsize=(15, 4))
    colours = {id(row): f"C{i}" for i, row in enumerate(rows)}
    for row, run in runs:
        if by_tokens:
            total, xs = 0.0, []
            for c in run.curves:
                total += c["sampled_tokens"]
                xs.append(total / 1000)
        else:
            xs = [c["step"] for c in run.curves]
        label = f"{row_label(row).replace(chr(10), ' ')} s{run.seed}"
        style = {"color": colours[id(row)], "alpha": 0.85, "label": label}
        reward_ax.plot(xs, moving_average([c["reward"] for c in run.curves], window), **style)
        if any(c.get("follow_rate") is not None and c["follow_rate"] == c["follow_rate"] for c in run.curves):
            follow_ax.plot(xs, moving_average([c.get("follow_rate") for c in run.curves], window), **style)
        length_ax.plot(xs, moving_average([c["reflection_length"] for c in run.curves], window), **style)
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 - matplotlib is optional (r3exp[reports])

    xlabel = "thousand tokens sampled for training" if by_tokens else "step"
    reward_ax.set(xlabel=xlabel, ylabel=f"mean reward, {window}-step average", title="Reward", ylim=(-0.03, 1.03))
    follow_ax.set(
        xlabel=xlabel,
        ylabel="share of sampled reflections",
        ylim=(-0.03, 1.03),
        title="Retry follows its reflection (R3)",
    )
    length_ax.set(xlabel=xlabel, ylabel="tokens", title="Reflection (GRPO: attempt) length")
    length_ax.set_ylim(bottom=0)
    for ax in (reward_ax, follow_ax, length_ax):
        ax.grid(alpha=0.3)
        if not by_tokens:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    reward_ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
