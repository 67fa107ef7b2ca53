"""Rule ingest_video: one configured video (URL or local file) -> mp4 + probe metadata."""

import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 -- the facevae package beside scripts/

from facevae.ingest import ingest
from facevae.rulerun import run_rule


def main(smk):
    ingest(smk.params.entry, smk.output.video, smk.output.meta, smk.params.download)


run_rule(snakemake, main)  # noqa: F821 -- injected by Snakemake
