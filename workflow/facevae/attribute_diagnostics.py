"""Diagnostics of an actor's latent space against CelebA, beside the product (:mod:`facevae.attributes`):

* the linear probe: how much of each CelebA attribute ``mu`` holds, by logistic regression tested on
  people the classifier never saw (cross-validation split by identity), next to the majority rate;
* the mouth curves: the mouth width and opening of decoded faces (landmarks re-measured) as the
  Smiling vector is added, against random directions of its norm (the control).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from facevae import FacevaeError
from facevae.atomic import save_figure
from facevae.expression import interocular_distance, mouth_open_ratio
from facevae.faces.measure import crop_landmarks
from facevae.modelio import edit_faces, encode
from facevae.plotting import pyplot
from facevae.sampling import evenly_spread

MOUTH_CORNERS = (48, 54)


# --- the linear probe ----------------------------------------------------------------------------


def identity_folds(identity: np.ndarray, folds: int = 5, seed: int = 0) -> tuple[np.ndarray, str]:
    """A fold number (0 .. folds-1) per face so that all faces of one identity share a fold.

    Faces of unknown identity (-1) count as their own person each. Identities are shuffled (seeded)
    and dealt to the folds in turn. Returns (fold per face, how): how is ``identity`` or, when no
    face has a known identity, ``image`` (a plain random split by face)."""
    identity = np.asarray(identity, dtype=np.int64)
    if int(folds) < 2:
        raise FacevaeError(f"attributes.probe_folds must be at least 2, got {folds}")
    how = "identity" if np.any(identity >= 0) else "image"
    keys = np.where(identity >= 0, identity, -1 - np.arange(len(identity)))  # unknown: one key per face
    groups, inverse = np.unique(keys, return_inverse=True)
    order = np.random.default_rng(seed).permutation(len(groups))
    fold_of_group = np.empty(len(groups), dtype=np.int64)
    fold_of_group[order] = np.arange(len(groups)) % int(folds)
    return fold_of_group[inverse], how


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: np.ndarray, max_iter: int = 100):
    """Independent L2-regularised logistic regressions, one per column of ``y`` (N, K) in {0,1},
    on standardised ``x`` (N, D), fitted jointly (full batch L-BFGS, float64: deterministic).
    ``l2`` (K,) is each column's penalty. Returns (W (D, K), b (K,))."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: threads only add synchronisation (and spin on a busy machine)
    try:
        return _fit_logistic_torch(x, y, l2, max_iter)
    finally:
        torch.set_num_threads(threads)


def _fit_logistic_torch(x, y, l2, max_iter):
    X = torch.as_tensor(x, dtype=torch.float64)
    Y = torch.as_tensor(y, dtype=torch.float64)
    lam = torch.as_tensor(np.broadcast_to(l2, (Y.shape[1],)).copy(), dtype=torch.float64)
    W = torch.zeros(X.shape[1], Y.shape[1], dtype=torch.float64, requires_grad=True)
    prior = Y.mean(0).clamp(1e-4, 1 - 1e-4)
    b = torch.log(prior / (1 - prior)).clone().requires_grad_(True)
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-9,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        logits = X @ W + b
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, Y, reduction="none").mean(0)
        loss = (loss + 0.5 * lam * (W * W).sum(0)).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return W.detach().numpy(), b.detach().numpy()


def _standardise(train: np.ndarray, *others: np.ndarray):
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 1e-8, std, 1.0)
    return [(a - mean) / std for a in (train, *others)]


def probe(
    latent: np.ndarray,
    attributes: np.ndarray,
    fields: list[str],
    identity: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    l2: float = 0.01,
) -> list[dict]:
    """Held-out accuracy of a linear classifier on ``latent`` for each attribute, next to the
    majority-class rate of the same held-out faces.

    Cross-validation by identity (:func:`identity_folds`): each fold's faces are classified by a
    logistic regression (L2 penalty ``l2`` on standardised features) trained on the other folds,
    so no person is on both sides of any split and every face is tested once. ``accuracy`` pools
    the folds' test predictions; ``majority`` pools each fold's own majority-class rate (the
    accuracy of always answering the more frequent class of that fold's test faces).
    One dict per attribute (a probe.tsv row)."""
    latent = np.asarray(latent, dtype=np.float64)
    y = np.asarray(attributes) == 1
    identity = np.asarray(identity, dtype=np.int64)
    fold, how = identity_folds(identity, folds, seed)
    n, k = y.shape
    if n < 2 * folds or len(np.unique(fold)) < folds:
        raise FacevaeError(f"too few aligned CelebA faces for a {folds}-fold probe ({n}): raise celeba.limit")
    pred = np.zeros_like(y)
    majority_hits = np.zeros(k)
    fold_acc = np.zeros((folds, k))
    for f in range(folds):
        test = fold == f
        x_train, x_test = _standardise(latent[~test], latent[test])
        W, b = _fit_logistic(x_train, y[~test].astype(np.float64), np.full(k, float(l2)))
        pred[test] = (x_test @ W + b) > 0
        rate = y[test].mean(axis=0)
        majority_hits += np.maximum(rate, 1 - rate) * test.sum()
        fold_acc[f] = (pred[test] == y[test]).mean(axis=0)
    rows = []
    for j, name in enumerate(fields):
        truth = y[:, j]
        acc = float((pred[:, j] == truth).mean())
        majority = float(majority_hits[j] / n)
        tpr = float(pred[truth, j].mean()) if truth.any() else float("nan")
        tnr = float((~pred[~truth, j]).mean()) if (~truth).any() else float("nan")
        rows.append(
            {
                "attribute": name,
                "accuracy": acc,
                "majority": majority,
                "gain": acc - majority,
                "balanced_accuracy": float(np.nanmean([tpr, tnr])),
                "accuracy_fold_sd": float(fold_acc[:, j].std()),
                "positive_rate": float(truth.mean()),
                "faces": int(n),
                "identities": int(len(np.unique(identity[identity >= 0]))) + int((identity < 0).sum()),
                "folds": int(folds),
                "split": how,
                "l2": float(l2),
                "seed": int(seed),
            }
        )
    return rows


def plot_probe(path, rows: list[dict], actor: str) -> Path:
    """Bar chart: probe accuracy next to the majority-class rate for every attribute."""
    plt = pyplot()

    names = [r["attribute"] for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(14, 4.5))
    ax.bar(x - 0.2, [r["majority"] for r in rows], 0.4, label="majority class", color="#bbbbbb")
    ax.bar(x + 0.2, [r["accuracy"] for r in rows], 0.4, label="linear probe on mu", color="#3070b0")
    ax.set_xticks(x, names, rotation=75, fontsize=8)
    ax.set_ylim(0.4, 1.1)
    ax.set_yticks(np.arange(0.4, 1.01, 0.1))
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"{actor}: CelebA attributes in the latent space ({rows[0]['folds']}-fold cross-validation by identity)")
    ax.legend(loc="upper center", ncol=2, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


# --- the mouth curves ---------------------------------------------------------------------------


def mouth_width_ratio(landmarks) -> np.ndarray:
    """Distance between the mouth corners (points 48 and 54) / inter-ocular distance; (N, 68, 2) -> (N,)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    width = np.linalg.norm(lm[..., MOUTH_CORNERS[1], :] - lm[..., MOUTH_CORNERS[0], :], axis=-1)
    iod = interocular_distance(lm)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(iod > 0, width / iod, np.nan)


def mouth_curve(model, latent: np.ndarray, direction: np.ndarray, amounts, cfg) -> dict:
    """Mean mouth width and opening (landmarks re-measured on the decoded faces) per amount.

    Returns {"width": (A,), "open": (A,), "width_all": (A, N), "measured": (A,) faces measured}."""
    faces = edit_faces(model, latent, direction, amounts)
    a, n = faces.shape[:2]
    lm = crop_landmarks(faces.reshape(a * n, *faces.shape[2:]), cfg).reshape(a, n, 68, 2)
    width = mouth_width_ratio(lm)
    opening = mouth_open_ratio(lm)
    return {
        "width": np.nanmean(width, axis=1),
        "open": np.nanmean(opening, axis=1),
        "width_all": width,
        "measured": np.isfinite(width).sum(axis=1),
    }


def random_direction(norm: float, dim: int, seed: int) -> np.ndarray:
    """A direction drawn uniformly on the sphere of radius ``norm`` (seeded)."""
    r = np.random.default_rng(seed).standard_normal(dim)
    return (r / np.linalg.norm(r) * norm).astype(np.float32)


def mouth_curves(model, own_faces, smile: np.ndarray, amounts, settings, align_cfg) -> list[dict]:
    """Mouth width/opening vs amount for the Smiling vector ``smile`` and random vectors of its norm."""
    faces = own_faces[evenly_spread(len(own_faces), int(settings["mouth_faces"]))]
    mu = encode(model, faces)
    directions = [("Smiling", smile)]
    norm = float(np.linalg.norm(smile))
    for i in range(int(settings["random_vectors"])):
        directions.append((f"random_{i + 1}", random_direction(norm, mu.shape[1], int(settings["seed"]) + i)))
    rows = []
    randoms = []
    for name, v in directions:
        curve = mouth_curve(model, mu, v, amounts, align_cfg)
        if name != "Smiling":
            randoms.append(curve)
        for j, a in enumerate(amounts):
            rows.append({"direction": name, "amount": float(a), "mouth_width": float(curve["width"][j]),
                         "mouth_open": float(curve["open"][j]), "faces": int(curve["measured"][j]),
                         "norm": norm})
    if randoms:  # the control curve: the mean over the random directions
        width = np.mean([c["width"] for c in randoms], axis=0)
        opening = np.mean([c["open"] for c in randoms], axis=0)
        measured = np.min([c["measured"] for c in randoms], axis=0)
        for j, a in enumerate(amounts):
            rows.append({"direction": "random_mean", "amount": float(a), "mouth_width": float(width[j]),
                         "mouth_open": float(opening[j]), "faces": int(measured[j]), "norm": norm})
    return rows


def plot_mouth(path, rows: list[dict], actor: str) -> Path:
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name in dict.fromkeys(r["direction"] for r in rows):
        sel = [r for r in rows if r["direction"] == name]
        style = (dict(color="#d04030", lw=2.5) if name == "Smiling" else dict(color="#202020", lw=2)
                 if name == "random_mean" else dict(color="#999999", lw=0.8, ls="--"))
        for ax, key in zip(axes, ("mouth_width", "mouth_open")):
            label = name if not name.startswith("random_") or name == "random_mean" or name == "random_1" else None
            label = "random directions" if name == "random_1" else label
            ax.plot([r["amount"] for r in sel], [r[key] for r in sel], marker="o", ms=3, label=label, **style)
    for ax, key in zip(axes, ("mouth width / inter-ocular", "mouth opening / inter-ocular")):
        ax.set_xlabel("amount of the direction added")
        ax.set_ylabel(key)
        ax.legend(fontsize=8)
    fig.suptitle(f"{actor}: decoded faces' mouth after adding the Smiling vector vs random vectors")
    fig.tight_layout()
    return save_figure(fig, path)
