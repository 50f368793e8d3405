"""Plotting helpers shared by the chapters (every figure gets a title, axis labels and a legend)."""
from __future__ import annotations

__all__ = ["PALETTE", "color_for"]

#: Fixed colours so that a model family looks the same in every chapter.
PALETTE: dict[str, str] = {
    "vanilla": "#4C72B0",
    "cifs": "#DD8452",
    "cas": "#55A868",
    "standard": "#8C8C8C",
    "natural": "#4C72B0",
    "adversarial": "#C44E52",
    "other": "#8172B3",
}


def color_for(name: str) -> str:
    """The colour of a model family or data kind (``"cifs-softmax"`` -> the CIFS colour)."""
    key = name.lower().split("-")[0].split("_")[0].split(" ")[0]
    return PALETTE.get(key, PALETTE["other"])
