"""Collection settings for the whole repository (tests/ and the doctests of recsim_ft/)."""

import importlib.util

# The Triton kernels' module imports triton (the ``gpu`` extra, which ``dev`` includes); without
# it there is nothing of that module to test, and tests/test_triton.py says so per test.
collect_ignore = [] if importlib.util.find_spec("triton") else ["recsim_ft/models/triton_mamba.py"]
