"""Rule page: the page's HTML / JS beside the actor's models, and vendor/ from the npm lock file."""

import logging
import sys
from pathlib import Path

sys.path.insert(0, snakemake.scriptdir + "/..")  # noqa: F821 -- the facevae package beside scripts/

from facevae.rulerun import run_rule
from facevae.webruntime import check_page_files, copy_page_files, install_runtime


def main(smk):
    log = logging.getLogger("facevae.page")
    folder = Path(smk.output.index).parent
    page_sha256 = check_page_files(folder)  # page.json and the graphs as page_models wrote them
    versions = install_runtime(smk.output.vendor, log=log)
    log.info("runtime: %s", ", ".join(f"{k} {v}" for k, v in versions.items()))
    # index.html last: it is the rule's file output, so it appears only when the rest is in place.
    copy_page_files(folder, page_sha256=page_sha256)


run_rule(snakemake, main)  # noqa: F821 -- injected by Snakemake
