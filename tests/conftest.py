"""Shared fixtures."""

import contextlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    # The Triton kernels run on CPU tensors through Triton's interpreter: how CI, which has no
    # GPU, proves them correct. Set before anything imports them (jit reads it then).
    os.environ.setdefault("TRITON_INTERPRET", "1")

import gymnasium as gym  # noqa: E402
from toy_env import ToyEnv  # noqa: E402, F401  (registers ToyRec-v0)

from recsim_ft.data import collect  # noqa: E402
from recsim_ft.models import mamba, native_scan  # noqa: E402  (after TRITON_INTERPRET)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false")


def require(available: bool, what: str, detail: str, chosen_off: bool = False) -> None:
    """Skip a test of ``what`` where it is unavailable, but fail it under CI (``CI`` set), where
    it must work: a broken kernel must not pass as a green run of skipped tests. ``chosen_off``
    (the user switched it off on purpose) skips everywhere."""
    if available:
        return
    if _in_ci() and not chosen_off:
        pytest.fail(f"{what} is not available under CI: {detail}")
    pytest.skip(f"{what} is not available: {detail}")


@pytest.fixture(scope="module")
def env():
    """The toy env (tests/toy_env.py), for a test of anything that needs an env; a module that
    needs another defines its own ``env``."""
    return gym.make("ToyRec-v0")


@pytest.fixture(scope="module")
def log(env):
    """2,000 logged events of ``env``'s behaviour policy, seed 0."""
    return collect(env, n=2_000, seed=0)


@pytest.fixture
def native_kernel():
    """For tests of the C kernel: it must be built (``RECSIM_FT_NATIVE_SCAN=0`` skips them)."""
    built, detail = native_scan.native_status()
    require(built, "the C kernel", detail, os.environ.get("RECSIM_FT_NATIVE_SCAN") == "0")


@pytest.fixture
def triton_device() -> str:
    """For tests of the Triton kernels: the device they run on, "cuda", or "cpu" through the
    interpreter (triton must be installed: the ``gpu`` extra, which ``dev`` includes)."""
    usable, detail = mamba.triton_status()
    require(usable, "triton", detail)
    return "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Bit-identical comparisons need the same thread count in every run (and in subprocesses);
    tiny networks also train many times faster on one thread than on two busy cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@contextlib.contextmanager
def interrupted_at_step(step: int):
    """Within the block, the trainer's ``step``-th step (counted from the block's start) raises
    KeyboardInterrupt, as a Ctrl-C during that step would; the block must raise it."""
    from recsim_ft.train import TrainStep

    calls, original = [], TrainStep.__call__

    def interrupt(self, index):
        calls.append(1)
        if len(calls) == step:
            raise KeyboardInterrupt
        return original(self, index)

    with pytest.MonkeyPatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(TrainStep, "__call__", interrupt)
        yield
