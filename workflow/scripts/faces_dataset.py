"""Rule faces_dataset: actors.<a>.dataset (path or URL of a blog-format HDF5) -> checked copy."""

import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 -- the facevae package beside scripts/

from facevae.faces.dataset import dataset_report, fetch_dataset
from facevae.rulerun import run_rule


def main(smk):
    actor = smk.wildcards.person
    fetch_dataset(smk.params.source, smk.output.faces, actor=actor, size=smk.params.size, download=smk.params.download)
    dataset_report(smk.output.faces, actor, smk.params.source, smk.output.kept, smk.output.counts)


run_rule(snakemake, main)  # noqa: F821 -- injected by Snakemake
