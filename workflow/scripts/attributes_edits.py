"""Rule attributes_edits: one actor's attribute file -> edit/direction grids and mouth-width curves."""

import sys

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 -- the facevae package beside scripts/

from facevae.attributes import build_edits, decoded_face_geometry
from facevae.rulerun import run_rule


def main(smk):
    import torch

    torch.set_num_threads(max(1, smk.threads))
    build_edits(
        smk.input.model,
        smk.input.h5,
        smk.input.faces,
        smk.params.drivers,
        smk.params.outdir,
        smk.params.settings,
        decoded_face_geometry(smk.params.faces),
        smk.wildcards.actor,
    )


run_rule(snakemake, main)  # noqa: F821 -- injected by Snakemake
