"""facevae: videos of people -> aligned faces -> per-actor face VAEs -> reenactment videos.

The Snakemake rules under ``rules/`` are thin; the real work lives here as plain functions and
small classes that are unit-tested without Snakemake.
"""

import os

__version__ = "0.1.0"

# OpenMP threads that wait for work sleep instead of spinning (read once, when torch loads its
# OpenMP runtime: facevae is imported first by every rule script). Spinning threads of two jobs
# on the same cores starve each other: two train_vae jobs at once took 4.1x their idle time
# spinning, 1.4x sleeping, which costs ~15 % when a job runs alone (bench/results/contention.md).
# A value the user sets wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

#: The side of the square aligned faces every model takes and gives (px). Here, torch-free, so the
#: faces stage can import it without loading torch.
FACE_SIZE = 64


class FacevaeError(Exception):
    """An error a user can act on: its message names the bad thing (config key, URL, file, actor).

    Rule scripts print it as one line instead of a traceback.
    """
