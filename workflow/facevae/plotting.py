"""The one place that picks matplotlib's backend.

Rules run headless (a cluster node, CI) and write PNGs only, so every figure goes through the
non-interactive Agg backend; importing pyplot here first means no module chooses another."""

from __future__ import annotations


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (imported on first use: planning and the light
    modules must not pay for matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
