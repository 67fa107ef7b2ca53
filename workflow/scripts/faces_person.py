"""Rules faces_actor / faces_driver: a person's tracks -> training set (actors) + table, sheets, counts."""

import sys
from pathlib import Path

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 -- the facevae package beside scripts/

from facevae.faces.dataset import assemble
from facevae.rulerun import run_rule


def main(smk):
    out = smk.output
    assemble(
        {Path(path).stem: path for path in smk.input.tracks},
        person=smk.wildcards.person,
        role="actor" if smk.rule == "faces_actor" else "driver",
        faces_cfg=smk.params.faces,
        out_faces=out.faces if smk.rule == "faces_actor" else None,
        out_table=out.table,
        out_kept=out.kept,
        out_rejected=out.rejected,
        out_counts=out.counts,
    )


run_rule(snakemake, main)  # noqa: F821 -- injected by Snakemake
