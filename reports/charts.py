"""Colours of the usage charts: one per model, the same on every page and filter, never a status colour."""

from __future__ import annotations

import zlib

from billing.models import UsageApi, UsageStatus
from reports.selectors import OTHER_MODELS

# Reserved for the requests-by-status chart (and the status pills); no model gets one of these hues.
STATUS_COLOURS = {
    UsageStatus.IN_PROGRESS.label: "#94a3b8",
    UsageStatus.COMPLETED.label: "#16a34a",
    UsageStatus.CANCELLED.label: "#f59e0b",
    UsageStatus.ERROR.label: "#dc2626",
    UsageStatus.INTERRUPTED.label: "#7c3aed",
}
# Model colours: blues, teals, pinks, ochre; none red, amber, green, violet or grey like a status.
# Mid tones, readable on the light and the dark background.
MODEL_PALETTE = (
    "#2563eb",  # blue
    "#0891b2",  # cyan
    "#db2777",  # pink
    "#0d9488",  # teal
    "#a16207",  # ochre
    "#4f46e5",  # indigo
    "#c026d3",  # fuchsia
    "#0284c7",  # sky
    "#0e7490",  # dark cyan
)
OTHER_COLOUR = "#78716c"
# The requests-by-API chart: one fixed colour per client API, from the model palette.
API_COLOURS: dict[str, str] = {
    UsageApi.CHAT_COMPLETIONS.value: MODEL_PALETTE[0],
    UsageApi.MESSAGES.value: MODEL_PALETTE[2],
    UsageApi.RESPONSES.value: MODEL_PALETTE[3],
    UsageApi.EMBEDDINGS.value: MODEL_PALETTE[4],
}


def series_colour(model_name: str) -> str:
    """The colour of ``model_name``'s series: a stable hash of the name into the palette."""
    if model_name == OTHER_MODELS:
        return OTHER_COLOUR
    return MODEL_PALETTE[zlib.crc32(model_name.encode()) % len(MODEL_PALETTE)]
