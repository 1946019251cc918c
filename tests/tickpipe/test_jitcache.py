"""numba's cache directory follows the sources (tickpipe.jitcache)."""

import os
import subprocess
import sys

import numba

from tickpipe import jitcache


def _tree(root, text="x = 1\n"):
    for pkg in jitcache.PACKAGES:
        (root / pkg).mkdir(parents=True, exist_ok=True)
        (root / pkg / "__init__.py").write_text("")
    (root / "kernels" / "levels.py").write_text(text)


def test_the_hash_changes_with_any_source_file_and_only_then(tmp_path):
    _tree(tmp_path)
    a = jitcache.source_hash(tmp_path)
    assert jitcache.source_hash(tmp_path) == a
    (tmp_path / "kernels" / "levels.py").write_text("x = 2\n")   # an inlined callee's file
    b = jitcache.source_hash(tmp_path)
    assert b != a
    (tmp_path / "normalize" / "new.py").write_text("")           # a new file counts too
    assert jitcache.source_hash(tmp_path) != b


def test_the_kernels_cache_under_the_hash_of_this_tree_and_old_ones_are_pruned(tmp_path):
    base = tmp_path / "tickpipe" / "numba"
    for k in range(6):                                            # older caches
        (base / f"old{k}").mkdir(parents=True)
        os.utime(base / f"old{k}", (k, k))
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    code = ("import kernels.book, numba, tickpipe.jitcache as j; "
            "print(numba.config.CACHE_DIR); print(j.source_hash())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0] == str(base / out[1])
    kept = sorted(p.name for p in base.iterdir())
    assert out[1] in kept and len(kept) == jitcache.KEEP
    assert {"old5", "old4", "old3"} <= set(kept)                 # the newest old ones


def test_a_cache_directory_set_by_the_user_is_left_alone(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "mine"))
    code = "import kernels.book, numba; print(numba.config.CACHE_DIR)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == str(tmp_path / "mine")
    assert numba.config.CACHE_DIR                                 # this process: configured
