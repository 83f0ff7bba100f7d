"""Post-processing hook for fraud v1: probability of fraud -> risk label."""

from __future__ import annotations

from typing import Any

import numpy as np

_LABELS = np.array(["not_fraud", "suspicious", "highly_suspicious"], dtype=object)
_cuts = np.array([0.5, 0.8], dtype=np.float32)


def init(params: dict[str, Any]) -> None:
    """Read the thresholds once at load."""
    global _cuts
    _cuts = np.array([params["suspicious"], params["highly_suspicious"]], dtype=np.float32)


def postprocess(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Add ``risk``: not_fraud below the first cut, highly_suspicious from the second."""
    p = tensors["probabilities"][:, 1]
    return {"risk": _LABELS[np.searchsorted(_cuts, p, side="right")]}
