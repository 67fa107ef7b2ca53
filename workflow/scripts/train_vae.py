"""Rule train_vae: one actor's faces -> results/models/{actor}/ (resumable, see facevae.train)."""

import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 -- the facevae package beside scripts/

from facevae.rulerun import run_rule
from facevae.train import TrainSettings, train_vae


def main(smk):
    outputs = {key: smk.output[key] for key in ("model", "metrics", "loss_plot", "reconstructions", "samples", "split")}
    feature_net = smk.input.feature_net[0] if len(smk.input.feature_net) else None
    train_vae(
        smk.input.faces,
        outputs,
        TrainSettings.from_config(smk.params.settings),
        smk.params.checkpoint,
        feature_net=feature_net,
        threads=smk.threads,
        actor=smk.wildcards.actor,
    )


run_rule(snakemake, main)  # noqa: F821 -- injected by Snakemake
