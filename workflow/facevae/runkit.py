"""The resumable-run kit: what makes a long loop stoppable and resumable to identical numbers.

Used by :mod:`facevae.train` (one actor's VAE) and :mod:`facevae.featurenet` (the DFC loss's feature
net). A run saves its checkpoint atomically (see :func:`facevae.modelio.atomic_torch_save`) with a fingerprint of everything that decides its numbers;
:func:`load_checkpoint` resumes only a checkpoint with the same fingerprint. :func:`rng_states`
captures every random generator the loop draws from, :class:`StopSignals` turns SIGTERM / SIGINT
(Ctrl-C, a cluster's kill) into a checkpoint at the next step boundary, and :func:`code_hash` puts
the loop's own source into the fingerprint.
"""

from __future__ import annotations

import hashlib
import logging
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def code_hash(*names: str) -> str:
    """sha256 of these modules' source files (names relative to the facevae package)."""
    here = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for name in names:
        digest.update((here / name).read_bytes())
    return digest.hexdigest()


def rng_states(gen: torch.Generator) -> dict:
    np_state = np.random.get_state()
    return {
        "generator": gen.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
    }


def set_rng_states(gen: torch.Generator, states: dict) -> None:
    gen.set_state(states["generator"].cpu())
    torch.set_rng_state(states["torch"].cpu())
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in states["cuda"]])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = states["python"]
    random.setstate((version, tuple(internal), gauss_next))


def load_checkpoint(path: Path, expected: str, device: torch.device, fmt: str) -> dict | None:
    """The checkpoint at ``path`` if it is a ``fmt`` checkpoint of this run (fingerprint ``expected``),
    else None (logged: a damaged, foreign or other-settings file only costs a fresh start)."""
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # noqa: BLE001 -- a damaged checkpoint only costs a fresh start
        log.warning("checkpoint %s unreadable (%s): starting afresh", path, err)
        return None
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        log.warning("%s is not a %s checkpoint: starting afresh", path, fmt)
        return None
    if ckpt.get("fingerprint") != expected:
        log.info("checkpoint %s is from other settings, faces or code: starting afresh", path)
        return None
    return ckpt


def resume(ckpt: dict, model: torch.nn.Module, optimiser: torch.optim.Optimizer, gen: torch.Generator, path: Path) -> dict:
    """Restore a run from a checkpoint :func:`load_checkpoint` accepted -- weights, optimiser, every
    RNG -- and return its loop state (``epoch``, ``batch``, ...), its ``resumed`` count raised by one."""
    model.load_state_dict(ckpt["model"])
    optimiser.load_state_dict(ckpt["optimiser"])
    set_rng_states(gen, ckpt["rng"])
    state = ckpt["state"]
    state["resumed"] += 1
    log.info("resuming from %s at epoch %d, batch %d", path, state["epoch"] + 1, state["batch"])
    return state


class StopSignals:
    """SIGTERM/SIGINT set a flag instead of killing the process mid-step; the loop then checkpoints
    at the next batch boundary and raises. Restores the previous handlers on exit."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._old = {}

    def _handler(self, signum, frame):
        self.signum = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def raise_stop(self, checkpoint: Path):
        message = f"training stopped by signal {self.signum}; checkpoint saved to {checkpoint}: re-run to resume"
        log.warning("%s", message)
        if self.signum == signal.SIGINT:
            raise KeyboardInterrupt(message)
        from .rulerun import Terminated

        raise Terminated(message)


def elapsed(device: torch.device, started: float) -> float:
    """Seconds since ``started`` once the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started
