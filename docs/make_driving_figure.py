"""Draws docs/driving.png, the diagram of docs/driving.md (how a driver frame becomes the actor's z).

    .venv/bin/python docs/make_driving_figure.py

A diagram only: no data is read. Edit the boxes here and rerun when the driving path changes.
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

OUT = Path(__file__).with_name("driving.png")
MAP = "#dbe9f6"  # fitted once per actor (rule fit_retarget)
RUN = "#f4f4f4"  # computed per driver video
NET = "#fde2c8"  # the actor's VAE
CHOICE = "#e6f2dc"


def box(ax, x, y, w, h, title, body="", color=RUN):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.08", fc=color, ec="#555555", lw=1))
    ax.text(x + w / 2, y + h - 0.16, title, ha="center", va="top", fontsize=10, weight="bold")
    if body:
        ax.text(x + w / 2, y + h - 0.48, body, ha="center", va="top", fontsize=8, linespacing=1.3)
    return (x, y, w, h)


def arrow(ax, start, end, text="", color="#333333"):
    ax.annotate("", xy=end, xytext=start, arrowprops=dict(arrowstyle="-|>", color=color, lw=1.2, shrinkA=2, shrinkB=2))
    if text:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.08, text, ha="center", va="bottom", fontsize=8,
                color=color)


def right(b, dy=0.5):
    return (b[0] + b[2], b[1] + b[3] * dy)


def left(b, dy=0.5):
    return (b[0], b[1] + b[3] * dy)


def main():
    fig, ax = plt.subplots(figsize=(15, 6.4))
    ax.set_xlim(0, 15)
    ax.set_ylim(0, 6.4)
    ax.axis("off")

    # the choice
    choice = box(ax, 0.2, 4.55, 2.6, 1.55, "render.drive: auto",
                 "driver's mean dlib descriptor\nvs the actor's:\n≤ same_person_distance?", CHOICE)
    ax.text(3.0, 5.55, "no: a stranger → retarget", fontsize=9, color="#1f4e79")
    ax.text(3.0, 4.7, "yes: the actor's own clip → blend", fontsize=9, color="#7a3e00")

    # retarget lane
    y, h = 2.35, 1.7
    lm = box(ax, 0.2, y, 1.75, h, "landmarks", "track's 68 points\n(dlib); mouth from\nface-api's net")
    norm = box(ax, 2.2, y, 1.75, h, "normalise", "eye midpoint at 0,\ninter-ocular\ndistance 1")
    neut = box(ax, 4.2, y, 2.0, h, "neutral transfer", "actor's neutral\n+ gain × (shape −\nreference neutral)\nreference: transfer of\nthe way actor → driver")
    feat = box(ax, 6.45, y, 1.75, h, "features", "mouth about its\ncentre, eye + brow\nabout the eye;\nbrows × brow_weight")
    kmap = box(ax, 8.45, y, 1.75, h, "kernel map", "Gaussian kernel\nridge regression\nfeatures → μ", MAP)
    read = box(ax, 10.45, y, 2.1, h, "read-out step", "one step along eye / mouth\ndirections; gated (held-out\nr ≥ 0.3), targets in the\nactor's range; eye step\ndecoupled + calibrated", MAP)
    dec = box(ax, 13.0, y + 0.15, 1.8, 1.4, "decoder", "z → the actor's\n64-px face", NET)
    for a, b in ((lm, norm), (norm, neut), (neut, feat), (feat, kmap), (kmap, read)):
        arrow(ax, right(a), left(b))
    arrow(ax, right(read), left(dec), "z")

    dn = box(ax, 2.2, 0.95, 1.95, 0.95, "driver's neutral", "median over the video\n(or a calibration window)")
    arrow(ax, (norm[0] + norm[2] / 2, norm[1]), (dn[0] + dn[2] / 2, dn[1] + dn[3]))
    arrow(ax, right(dn), (neut[0] + 0.4, neut[1]))

    # blend lane
    enc = box(ax, 6.45, 0.2, 1.75, 1.5, "encoder", "the driver's crop\n→ z_enc (the\nactor's encoder)", NET)
    pick = box(ax, 8.45, 0.2, 2.1, 1.5, "transfer pick", "self_transfer encoder:\nthe transfer of 0 … 1\nwhose retargeted z lies\nnearest the encoder's", CHOICE)
    blend = box(ax, 10.85, 0.2, 1.9, 1.5, "blend", "(1 − self_blend) × z_enc\n+ self_blend × z_map", CHOICE)
    arrow(ax, right(enc), left(pick), "", "#7a3e00")
    arrow(ax, right(pick), left(blend), "", "#7a3e00")
    arrow(ax, (read[0] + 1.6, read[1]), (blend[0] + 1.2, blend[1] + blend[3]), "z_map", "#7a3e00")
    arrow(ax, right(blend), (dec[0] + 0.5, dec[1]), "z", "#7a3e00")
    arrow(ax, (pick[0] + pick[2] / 2, pick[1] + pick[3]), (neut[0] + neut[2] - 0.3, neut[1]), "transfer", "#7a3e00")

    # legend
    for i, (color, label) in enumerate(((MAP, "fitted once per actor (rule fit_retarget)"), (RUN, "per driver video"),
                                        (NET, "the actor's VAE"), (CHOICE, "choices (auto, own clips)"))):
        ax.add_patch(FancyBboxPatch((9.0 + (i % 2) * 3.6, 5.75 - (i // 2) * 0.4), 0.3, 0.22, boxstyle="round,pad=0.01",
                                    fc=color, ec="#555555", lw=0.8))
        ax.text(9.4 + (i % 2) * 3.6, 5.86 - (i // 2) * 0.4, label, va="center", fontsize=8)
    fig.savefig(OUT, dpi=100, bbox_inches="tight", metadata={"Software": None})
    print(OUT)


if __name__ == "__main__":
    main()
