"""Rule reenact_scores: one score TSV -> its short table for the report (facevae.summary.score_table)."""

import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 -- the facevae package beside scripts/

from facevae.atomic import write_text
from facevae.rulerun import run_rule
from facevae.summary import score_table


def main(smk):
    write_text(smk.output[0], score_table(smk.input.score).to_csv(sep="\t", index=False, float_format="%.4g"))


run_rule(snakemake, main)  # noqa: F821 -- injected by Snakemake
