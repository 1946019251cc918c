"""Where numba keeps tickpipe's compiled kernels: a cache directory per version of the sources.

numba's on-disk cache (``cache=True``) is checked against the source file of the compiled
function only. tickpipe's kernels inline functions from other files (the book kernels inline the
level and order-map functions of ``kernels.levels`` and ``normalize.ordermap``), so after an
edit to one of those the old machine code would load until the kernel's own file changed. This
module, imported by each package that compiles kernels before it defines any, points numba at a
directory named by a hash of every tickpipe source file, under ``$XDG_CACHE_HOME/tickpipe``
(``~/.cache/tickpipe``): any edit gives a fresh cache, and the newest few are kept. A
``NUMBA_CACHE_DIR`` set by the user is left as it is.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numba

PACKAGES = ("ingest", "normalize", "kernels", "tickstore", "replay", "tickpipe")
KEEP = 4                      # cache directories kept (the newest ones)
_ROOT = Path(__file__).resolve().parents[1]


def source_hash(root: Path = _ROOT) -> str:
    """A hash of every ``.py`` file of tickpipe's packages under ``root``, names and bytes."""
    h = hashlib.sha1()
    for pkg in PACKAGES:
        for f in sorted((root / pkg).rglob("*.py")):
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cache_base() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "tickpipe" / "numba"


def configure() -> str | None:
    """Set numba's cache directory for these sources (unless ``NUMBA_CACHE_DIR`` is set);
    returns it, or None when left alone or when no cache directory can be written."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return None
    try:
        base = cache_base()
        here = base / source_hash()
        here.mkdir(parents=True, exist_ok=True)
        os.utime(here)                      # newest first when pruning
        old = sorted((p for p in base.iterdir() if p.is_dir() and p != here),
                     key=lambda p: p.stat().st_mtime, reverse=True)
        for p in old[KEEP - 1:]:
            shutil.rmtree(p, ignore_errors=True)
    except OSError:                         # no writable home: numba's default place
        return None
    numba.config.CACHE_DIR = str(here)
    return str(here)


CACHE_DIR = configure()
