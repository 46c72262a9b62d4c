"""How many CPU threads torch uses for recsim-ft's models, and why one by default.

The paper's models are small: a training step at batch 32 is a few hundred short operations.
On an idle 2-core machine two threads make such a step about 1.4x faster than one; but when
anything else runs, torch's OpenMP threads spin at every barrier while one of them waits for a
core, and the same step measured 10 to 90x slower (``benchmarks/busy_machine.py``). One thread
costs at most its fair share of a busy machine, so it is the default; more threads pay for large
batches or many feature tokens on an idle machine, and parallel runs (``--jobs``) use the cores
better than threads do. ``RECSIM_FT_THREADS`` (or ``--threads`` on the command line, or
``TrainConfig.threads``) chooses another count; the count changes float rounding in matmuls, so
bit-identical reruns need the same count.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from recsim_ft.checks import check_int

#: Threads per training process unless ``RECSIM_FT_THREADS`` says otherwise.
DEFAULT_THREADS = 1
ENV_VAR = "RECSIM_FT_THREADS"


def default_threads() -> int:
    """``RECSIM_FT_THREADS`` (a positive integer) if set, else :data:`DEFAULT_THREADS`."""
    value = os.environ.get(ENV_VAR)
    if value is None:
        return DEFAULT_THREADS
    try:
        return check_int(ENV_VAR, int(value), low=1)
    except ValueError:
        raise ValueError(f"{ENV_VAR} must be a positive integer, got {value!r}") from None


@contextmanager
def torch_threads(n: int | None = None) -> Iterator[int]:
    """Run the block with ``n`` torch intra-op threads (None: :func:`default_threads`), then
    restore the caller's count."""
    n = default_threads() if n is None else check_int("threads", n, low=1)
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


@contextmanager
def use_threads(n: int | None) -> Iterator[int]:
    """For a whole command: ``n`` threads (None: :func:`default_threads`) for torch in this
    process and, through ``RECSIM_FT_THREADS``, in every training run and worker process it
    starts; both restored afterwards."""
    n = default_threads() if n is None else check_int("threads", n, low=1)
    before = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(n)
    try:
        with torch_threads(n):
            yield n
    finally:
        if before is None:
            del os.environ[ENV_VAR]
        else:
            os.environ[ENV_VAR] = before
