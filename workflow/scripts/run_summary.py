"""Rule summary: every actor's faces / training numbers and every reenactment's scores -> results/summary.tsv."""

import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 -- the facevae package beside scripts/

from facevae.atomic import write_text
from facevae.rulerun import run_rule
from facevae.summary import run_summary


def main(smk):
    i = smk.input
    table = run_summary(list(i.counts), list(i.metrics), list(i.models), list(i.scores))
    write_text(smk.output[0], table.to_csv(sep="\t", index=False, float_format="%.6g"))


run_rule(snakemake, main)  # noqa: F821 -- injected by Snakemake
