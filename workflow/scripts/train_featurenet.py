"""Rule train_featurenet: aligned CelebA faces -> the DFC loss's feature network (see facevae.featurenet);
resumes from its checkpoint when re-run after a kill."""

import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 -- the facevae package beside scripts/

from facevae.featurenet import train_feature_net
from facevae.rulerun import run_rule


def main(smk):
    train_feature_net(smk.input[0], smk.output.net, smk.output.metrics, smk.output.plot, smk.params.settings, threads=smk.threads,
                      checkpoint=smk.params.checkpoint)


run_rule(snakemake, main)  # noqa: F821 -- injected by Snakemake
