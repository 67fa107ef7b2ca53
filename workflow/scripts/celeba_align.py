"""Rule celeba_align: CelebA's images + attribute/identity lists -> results/celeba/aligned.h5."""

import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 -- the facevae package beside scripts/

from facevae.celeba import build_aligned
from facevae.rulerun import run_rule


def main(smk):
    build_aligned(
        smk.params.celeba,
        smk.params.faces,
        smk.output.h5,
        out_sheet=smk.output.sheet,
        out_rejected=smk.output.rejected,
        workers=smk.threads,
    )


run_rule(snakemake, main)  # noqa: F821 -- injected by Snakemake
