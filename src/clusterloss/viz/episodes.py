"""A picture of one-shot episodes: each row a query, then its candidates; the one chosen framed green (right)
or red (wrong), and the right one underlined when the choice was wrong."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

__all__ = ["episodes_figure", "pick_rows"]

GREEN, RED, GREY = "#1a7f37", "#cf222e", "#8c959f"


def pick_rows(predictions: torch.Tensor, answers: torch.Tensor, rows: int = 6) -> list[tuple[int, int]]:
    """(run, item) pairs to show: the first test item of runs 0, 1, ... but at least one wrong choice when
    there is one (so the picture shows what an error looks like)."""
    runs, items = answers.shape
    chosen = [(r % runs, r // runs) for r in range(min(rows, runs * items))]
    wrong = torch.nonzero(predictions != answers)
    if len(wrong) and all(int(predictions[r, i]) == int(answers[r, i]) for r, i in chosen):
        chosen[-1] = (int(wrong[0, 0]), int(wrong[0, 1]))
    return chosen


def episodes_figure(train_images: torch.Tensor, test_images: torch.Tensor, answers: torch.Tensor,
                    predictions: torch.Tensor, out: str | Path, rows: int = 6, title: str = "") -> Path:
    """Draw ``rows`` episodes of one-shot runs to ``out`` (PNG).

    ``train_images`` / ``test_images``: uint8 [R, W, 1, H, W'] (ink bright), ``answers`` / ``predictions``:
    int [R, W] (the training image of each test item's class / the one chosen).
    """
    answers, predictions = torch.as_tensor(answers), torch.as_tensor(predictions)
    if answers.shape != predictions.shape or answers.shape != train_images.shape[:2]:
        raise ValueError(f"answers {tuple(answers.shape)}, predictions {tuple(predictions.shape)} and "
                         f"the runs' images {tuple(train_images.shape[:2])} must share [runs, ways]")
    shown = pick_rows(predictions, answers, rows)
    ways = answers.shape[1]
    fig, axes = plt.subplots(len(shown), ways + 1, figsize=(0.62 * (ways + 1.4), 0.7 * len(shown) + 0.5),
                             dpi=110, squeeze=False)
    for row, (run, item) in enumerate(shown):
        truth, choice = int(answers[run, item]), int(predictions[run, item])
        cells = [test_images[run, item]] + [train_images[run, c] for c in range(ways)]
        for col, image in enumerate(cells):
            ax = axes[row, col]
            ax.imshow(255 - np.asarray(image[0]), cmap="gray", vmin=0, vmax=255)  # black ink on white
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            candidate = col - 1
            if col == 0:
                ax.set_ylabel(f"run {run + 1}\nitem {item + 1}", fontsize=7, rotation=0, ha="right",
                              va="center")
                ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, lw=1.5, ec=GREY,
                                       clip_on=False))
            elif candidate == choice:
                colour = GREEN if choice == truth else RED
                ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, lw=3, ec=colour,
                                       clip_on=False))
            elif candidate == truth:
                ax.add_patch(Rectangle((0, -0.08), 1, 0.06, transform=ax.transAxes, color=GREEN,
                                       clip_on=False))
    axes[0, 0].set_title("query", fontsize=8)
    axes[0, 1 + ways // 2].set_title(f"its {ways} candidates (one per class)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, facecolor="white")
    plt.close(fig)
    return out
