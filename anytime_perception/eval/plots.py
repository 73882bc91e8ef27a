"""What every report's matplotlib figure ends with: grid and legend, then saved as PNG and closed."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)

__all__ = ["save_plot"]


def save_plot(fig: plt.Figure, path: Path, axes: list[plt.Axes] | None = None, legend_size: int = 8,
              dpi: int = 120) -> Path:
    """Give ``axes`` a light grid and a legend right of the plot (never over the data), save ``fig``
    to ``path`` (folders made) and close it."""
    legends = []
    for ax in axes or []:
        ax.grid(alpha=0.3)
        legends.append(ax.legend(fontsize=legend_size, loc="upper left", bbox_to_anchor=(1.02, 1.0)))
        legends[-1].set_in_layout(False)  # the axes keep their size; the saved image grows to the legend
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", bbox_extra_artists=legends)
    plt.close(fig)
    return path
