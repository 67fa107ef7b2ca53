"""What every rule script does around its real work: logging, signals, one-line errors.

A rule script is::

    from facevae.rulerun import run_rule
    run_rule(snakemake, main)       # main(snakemake) does the work

The full log (progress bars included) goes to the rule's ``log:`` file. A FacevaeError -- bad
input a user can fix -- is also printed as ONE line on the console, without a traceback, and the
job fails; anything else is a bug and keeps its traceback (in the log and on the console).
SIGTERM (Snakemake's Ctrl-C, a cluster's kill) becomes an exception, so ``finally`` blocks clean
up temporary files.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import sys
import traceback
from pathlib import Path

from facevae import FacevaeError


class Terminated(BaseException):
    """Raised on SIGTERM so cleanup code runs (BaseException: not swallowed by ``except Exception``)."""


def _on_sigterm(signum, frame):
    raise Terminated(f"terminated by signal {signum}")


def setup_logging(log_path: str | None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        handlers = [logging.FileHandler(log_path, mode="w")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers, force=True)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _out_of_space(err: BaseException | None) -> bool:
    """Whether ``err`` (or what caused it: a worker's error, h5py's, ffmpeg's message) is a full disk."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError) and err.errno in _NO_SPACE:
            return True
        if "No space left on device" in str(err) or "Disk quota exceeded" in str(err):
            return True
        err, seen = err.__cause__ or err.__context__, seen + 1
    return False


# Environment faults a user fixes (a folder in the way, no permission, a read-only disk): one line
# naming the file, like a FacevaeError, not a traceback. The hint says what to do.
_UNWRITABLE = {
    errno.EISDIR: "a folder is in the way: move or remove it",
    errno.ENOTDIR: "a file is in the way where a folder is needed: move or remove it",
    errno.EACCES: "permission denied: check the owner and mode of the file and its folder",
    errno.EPERM: "operation not permitted: check the owner and mode of the file and its folder",
    errno.EROFS: "the file system is read-only: run where results/ is writable",
}
_UNWRITABLE_WORDS = {"Is a directory": errno.EISDIR, "Not a directory": errno.ENOTDIR, "Permission denied": errno.EACCES,
                     "Read-only file system": errno.EROFS}


def _unwritable(err: BaseException | None) -> str | None:
    """The one-line message when ``err`` (or what caused it) is an environment fault on a file."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, OSError):
            code = err.errno if err.errno in _UNWRITABLE else next(
                (c for words, c in _UNWRITABLE_WORDS.items() if words in str(err)), None)  # h5py: no errno
            if code is not None:
                name = err.filename2 if err.errno == errno.EISDIR and err.filename2 else err.filename
                what = f"{name}: " if name else ""
                return f"{what}{os.strerror(code)} -- {_UNWRITABLE[code]} ({err.strerror or err})"
        err, seen = err.__cause__ or err.__context__, seen + 1
    return None


def _disk_full_error(smk) -> str:
    outputs = ", ".join(str(p) for p in smk.output) or "its outputs"
    where = Path(str(smk.output[0])).parent if len(smk.output) else Path(".")
    return (f"no space left on the device writing {outputs} (in {where}): free some space, or move results/ to "
            "a larger disk; nothing partial was kept, earlier results are untouched")


def _exit_disk_full(smk, console, detail: str) -> None:
    """The one-line disk-full error (the detail goes to the log only), then exit at once: not
    sys.exit, because HDF5 closing a file whose writes failed segfaults at interpreter exit."""
    message = _disk_full_error(smk)
    logging.getLogger("facevae").error("%s\n%s", message, detail)
    print(f"facevae error in rule {smk.rule}: {message}", file=console, flush=True)
    logging.shutdown()
    os._exit(1)


def run_rule(smk, main) -> None:
    log_path = smk.log[0] if len(smk.log) else None
    setup_logging(log_path)
    console = sys.stderr
    if log_path:  # progress bars, stray prints and native libraries' own logging go to the log file too
        console = os.fdopen(os.dup(2), "w", buffering=1)  # the one-line error still reaches the console
        sys.stderr = open(log_path, "a", buffering=1)
        os.dup2(sys.stderr.fileno(), 2)  # C/C++ code (MediaPipe, ffmpeg's stderr) writes to fd 2 directly
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        main(smk)
    except FacevaeError as err:
        if _out_of_space(err):
            _exit_disk_full(smk, console, str(err))
        logging.getLogger("facevae").error("%s", err)
        print(f"facevae error in rule {smk.rule}: {err}", file=console, flush=True)
        sys.exit(1)
    except (KeyboardInterrupt, Terminated) as err:  # Ctrl-C, Snakemake's or a cluster's kill: no traceback
        what = str(err) or type(err).__name__
        logging.getLogger("facevae").error("interrupted: %s; nothing partial kept", what)
        print(f"facevae: rule {smk.rule} interrupted ({what}); nothing partial kept, re-run to continue", file=console,
              flush=True)
        sys.exit(130)
    except BaseException as err:
        if _out_of_space(err):  # not a bug: one line, like any error the user can fix
            _exit_disk_full(smk, console, traceback.format_exc())
        unwritable = _unwritable(err)
        if unwritable:  # not a bug either: the file system said no
            logging.getLogger("facevae").error("%s\n%s", unwritable, traceback.format_exc())
            print(f"facevae error in rule {smk.rule}: {unwritable}", file=console, flush=True)
            sys.exit(1)
        text = traceback.format_exc()
        logging.getLogger("facevae").error("%s", text)
        print(text, file=console, flush=True)
        sys.exit(1)
