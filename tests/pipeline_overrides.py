"""What the test session's ONE pipeline run changes in the default config.yaml, stage by stage.

The run is the demo config with its URLs on the loopback server, made small enough for CI on two
CPU cores. Each stage owns one function below and returns only its own config section(s).
"""

from __future__ import annotations


def faces(media) -> dict:
    # Training sets sampled at 10 faces/s (d6: ~330, d10: ~150 faces); tracks keep every frame.
    return {"faces": {"aligner": "dlib", "fps": 10}}


def celeba(media) -> dict:
    # The shared CelebA sample's first 2000 images (~10-15 s to align on 2 cores); the attribute
    # stage with small grids and a short mouth-curve control so both actors stay quick.
    return {
        "celeba": {
            "images": str(media("celeba/img_align_celeba_89x109")),
            "attributes": str(media("celeba/list_attr_celeba.txt")),
            "identities": str(media("celeba/identity_CelebA.txt")),
            "limit": 2000,
        },
        "attributes": {"rows": 2, "pca_components": 3, "mouth_faces": 40, "random_vectors": 6},
    }


def train(media) -> dict:
    # The default model (calibrated Gaussian decoder), narrow, batch 16 for 40 epochs with a cosine
    # learning rate: ~20 s for d6's 186 training faces on two cores, and enough for the
    # self-reenactment to follow the driver's mouth (mouth-opening Pearson measured over seeds 0/1/2:
    # 0.61/0.72/0.81; with a constant lr 0.46/0.72/0.74; 2 epochs: ~0.1). Tests that judge the model
    # families train their own (tests/test_train.py).
    return {"train": {"epochs": 40, "batch_size": 16, "lr_schedule": "cosine", "width": 8, "checkpoint_minutes": 0}}


def render(media) -> dict:
    # Self-reenactment: d6 is trained on the first 25 s of its clip only, and the rest of the same
    # clip (a local file section) drives it; tpsmm (speech, audio) drives d6 with paste-back on.
    return {
        "actors": {"d6": {"videos": {"d6": {"end": "00:00:25"}}}},
        "drivers": {"d6rest": {"videos": {"rest": {"path": str(media("videos/lp_d6.mp4")), "start": "00:00:25"}}}},
        "reenact": [{"actor": "d6", "driver": "tpsmm"}, {"actor": "d6", "driver": "d6rest"}],
        "render": {"panel_size": 128, "paste_back": True, "score": {"permutations": 500}},
        "explore": {"panel_size": 128, "walk": {"points": 4, "steps": 10}, "interpolate": {"steps": 12},
                    "samples": {"rows": 4, "cols": 4}},
    }


def test_overrides(media) -> dict:
    merged: dict = {}
    for stage in (faces, celeba, train, render):
        for key, value in stage(media).items():
            if key in merged:
                raise ValueError(f"two stages override config section {key!r}")
            merged[key] = value
    return merged
