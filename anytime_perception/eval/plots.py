"""What every report's matplotlib figure ends with: grid and legend, then saved as PNG and closed."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (backend first)

__all__ = ["save_plot"]


def save_plot(fig: plt.Figure, path: Path, axes: list[plt.Axes] | None = None, legend_size: int = 8,
              dpi: int = 120) -> Path:
    """Give ``axes`` a light grid and a legend, save ``fig`` to ``path`` (folders made) and close it."""
    for ax in axes or []:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend_size)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
