"""Small helpers of rules/train.smk (kept here so they are importable and tested without Snakemake)."""

from __future__ import annotations

FEATURENET = "results/featurenet/featurenet.pt"


def actor_names(config: dict) -> list[str]:
    return sorted(config.get("actors") or {})


def train_settings(config: dict) -> dict:
    """The ``train:`` section (defaults filled in by validation): the rule's params, so editing it re-runs training."""
    return dict(config.get("train") or {})


def featurenet_settings(config: dict) -> dict:
    return dict(config.get("featurenet") or {})


def feature_net_input(config: dict) -> list[str]:
    """The DFC feature network a training job needs: the user's file, the workflow's, or none."""
    train = config.get("train") or {}
    if train.get("model") != "dfc":
        return []
    user = (train.get("dfc") or {}).get("feature_net")
    return [user] if user else [FEATURENET]
