"""kernels."""

import tickpipe.jitcache  # noqa: F401  (numba's cache directory, before any kernel is defined)
