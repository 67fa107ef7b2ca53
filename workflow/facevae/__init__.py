"""facevae: videos of people -> aligned faces -> per-actor face VAEs -> reenactment videos.

The Snakemake rules under ``rules/`` are thin; the real work lives here as plain functions and
small classes that are unit-tested without Snakemake.
"""

__version__ = "0.1.0"

#: The side of the square aligned faces every model takes and gives (px). Here, torch-free, so the
#: faces stage can import it without loading torch.
FACE_SIZE = 64


class FacevaeError(Exception):
    """An error a user can act on: its message names the bad thing (config key, URL, file, actor).

    Rule scripts print it as one line instead of a traceback.
    """
