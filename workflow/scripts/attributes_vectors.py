"""Rule attributes_vectors: one actor's model + aligned CelebA -> attribute vectors, directions, probes."""

import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 -- the facevae package beside scripts/

from facevae.attributes import build_attributes
from facevae.rulerun import run_rule


def main(smk):
    import torch

    torch.set_num_threads(max(1, smk.threads))
    build_attributes(
        smk.input.model,
        smk.input.aligned,
        smk.input.faces,
        smk.output.h5,
        smk.output.probe,
        smk.output.probe_png,
        smk.params.settings,
        smk.wildcards.actor,
    )


run_rule(snakemake, main)  # noqa: F821 -- injected by Snakemake
