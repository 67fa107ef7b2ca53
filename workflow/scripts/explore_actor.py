"""Rule explore: an actor's latent space -> walk.mp4, interpolate.mp4, samples.png."""

import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 -- the facevae package beside scripts/

from facevae.explore import render_explore
from facevae.rulerun import run_rule


def main(smk):
    import torch

    torch.set_num_threads(max(1, smk.threads))
    settings = {**smk.params.explore, "device": smk.params.device}
    render_explore(smk.input.model, smk.input.faces, dict(smk.output.items()), settings, actor=smk.wildcards.actor)


run_rule(snakemake, main)  # noqa: F821 -- injected by Snakemake
