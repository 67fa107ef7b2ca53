"""Rule faces_track: one video -> results/tracks/{person}/{video}.h5 (every frame, aligned and judged)."""

import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 -- the facevae package beside scripts/

from facevae.faces.track import extract_track
from facevae.rulerun import run_rule


def main(smk):
    who = smk.params.person
    extract_track(
        smk.input.video,
        smk.output[0],
        person=who["person"],
        name=smk.wildcards.video,
        role=who["role"],
        faces_cfg=smk.params.faces,
        reference=who["reference"],
        exclude=smk.params.exclude,
        workers=smk.threads,
    )


run_rule(snakemake, main)  # noqa: F821 -- injected by Snakemake
