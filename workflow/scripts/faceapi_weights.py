"""Rule faceapi_weights: face-api's 68-point landmark weights from the page's npm lock file."""

import logging
import sys
from pathlib import Path

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 -- the facevae package beside scripts/

from facevae.rulerun import run_rule
from facevae.webruntime import LANDMARK_WEIGHT_FILES, install_runtime


def main(smk):
    log = logging.getLogger("facevae.faceapi_weights")
    versions = install_runtime(Path(smk.output.manifest).parent, log=log, files=LANDMARK_WEIGHT_FILES,
                               rule="faceapi_weights")
    log.info("face-api weights from: %s", ", ".join(f"{k} {v}" for k, v in versions.items()))


run_rule(snakemake, main)  # noqa: F821 -- injected by Snakemake
