"""Data-parallel training on Ray Train (the ``ray`` extra), and the Ray runtime that it and the
sharded retrieval (``recsim_ft.retrieval.sharded``) start.

``TrainConfig(workers=N)`` (``recsim-ft train --workers N``) runs the trainer as a Ray Train
``TorchTrainer`` of N CPU workers in a gloo process group. Every step each worker takes its
``batch_size / N`` rows of the single process's batch (so over a pass, each reads its shard of
the log), computes its loss and gradients, and one all-reduce averages the gradients (and the
losses) over the workers, as DDP does; every worker then takes the same Adam step. So:

* the **effective batch** is ``batch_size``, the single process's, and the **learning rate** is
  the single process's too (no scaling rule: the gradient is that of the same batch); the
  batch must divide among the workers;
* the in-batch softmax scores each worker's users against the items of the *whole* batch
  (gathered with their gradients), so its negatives are the single process's; only
  ``uniform_negatives`` are drawn per worker;
* **seeds**: worker 0 draws from ``config.seed`` as one process does, worker r > 0 from a seed
  of its own derived from (seed, r); with one worker the weights equal the single-process
  run's bit for bit;
* worker 0 evaluates and reports progress; the **driver writes the run directory** (the
  checkpoint, sent to it through a Ray actor), so ``resume`` works as in one process, and a
  worker that dies mid-training makes Ray Train restart the group (``MAX_FAILURES`` times),
  which resumes from the last checkpoint (with ``out_dir``; from scratch without one).

Where a cluster runs it: ``address`` (``host:port`` or ``auto``), else ``RAY_ADDRESS`` (Ray's
own variable), else a local runtime of ``workers`` CPUs started here. Each worker runs torch
with ``config.threads`` threads (one by default) and asks Ray for as many CPUs.
"""

from __future__ import annotations

import io
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from recsim_ft.checks import check_int
from recsim_ft.fileio import atomic_path

#: seconds to wait for a cluster's address to answer before calling it unreachable
CONNECT_TIMEOUT_S = 5.0
#: gradients of this many rows or more (embedding tables) are averaged over the rows touched
SPARSE_ROWS = 4096
#: restarts of a worker group that lost a worker before the run fails
MAX_FAILURES = 2
#: how often worker 0 reports progress, and the driver polls for it (seconds)
REPORT_EVERY_S = 0.5


def ray_module(purpose: str = "training on several workers") -> Any:
    """``ray``, or an error naming the extra that installs it."""
    try:
        import ray
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            f"{purpose} runs on Ray, from recsim-ft's 'ray' extra: pip install \"recsim-ft[ray]\"",
            name="ray",
        ) from None
    return ray


def check_address(address: str | None) -> None:
    """Refuse, within :data:`CONNECT_TIMEOUT_S`, a ``host:port`` address nobody answers (Ray
    itself waits much longer); ``None`` (a local runtime) and ``auto`` pass."""
    if address is None or address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"address must be host:port (or 'auto'), got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise ConnectionError(
            f"no Ray cluster answers at {address} ({err}); start one with `ray start --head` "
            "or check the address"
        ) from None


#: the node id of the local Ray runtime this module started (a runtime started elsewhere, or
#: started again after a shutdown, has another)
_started = {"node": None}


def start_ray(
    workers: int, address: str | None = None, cpus_per_worker: int = 1, purpose: str = ""
) -> Any:
    """Ray, connected to the cluster at ``address`` (or ``RAY_ADDRESS``) or, without one, to a
    local runtime of ``workers * cpus_per_worker`` CPUs (started here unless one is running);
    refused when the cluster has fewer CPUs than that."""
    ray = ray_module(*([purpose] if purpose else []))
    check_int("workers", workers, low=1)
    address = address or os.environ.get("RAY_ADDRESS") or None
    cpus = workers * cpus_per_worker
    ours = ray.is_initialized() and ray.get_runtime_context().get_node_id() == _started["node"]
    if ours and ray.cluster_resources().get("CPU", 0) < cpus:
        ray.shutdown()  # one this module started for fewer workers: start it again, larger
    if not ray.is_initialized():
        check_address(address)
        options = {"num_cpus": cpus} if address is None else {"address": address}
        ray.init(**options, include_dashboard=False, log_to_driver=False)
        _started["node"] = ray.get_runtime_context().get_node_id() if address is None else None
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if workers * cpus_per_worker > cpus:
        each = f" of {cpus_per_worker} CPUs each" if cpus_per_worker > 1 else ""
        raise ValueError(f"workers={workers}{each} but the Ray cluster has {cpus} CPU(s)")
    return ray


def _to_bytes(value: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _from_bytes(data: bytes) -> Any:
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)


class _Mailbox:
    """A Ray actor between worker 0 and the driver: progress, checkpoints and the result go to
    the driver in the order they were sent; the last checkpoint stays for a restarted group."""

    def __init__(self, checkpoint: bytes | None) -> None:
        self.messages: list[tuple[str, Any]] = []
        self.checkpoint = checkpoint

    def save(self, path: Path | None, state: dict[str, Any]) -> None:
        """Checkpoint ``state``: the driver writes it to ``path``."""
        self.send("checkpoint", state)

    def send(self, kind: str, value: Any) -> None:
        if kind == "checkpoint":
            self.checkpoint = value
        self.messages.append((kind, value))

    def take(self) -> list[tuple[str, Any]]:
        messages, self.messages = self.messages, []
        return messages

    def last_checkpoint(self) -> bytes | None:
        return self.checkpoint


class DataParallel:
    """One worker's part in a data-parallel run (module docstring): worker ``rank`` of
    ``world``, sending what the driver writes through ``mailbox``."""

    def __init__(self, rank: int, world: int, mailbox: Any = None) -> None:
        self.rank, self.world, self.mailbox = rank, world, mailbox
        self.last_report = 0.0

    @property
    def main(self) -> bool:
        """Whether this worker evaluates, reports and checkpoints (worker 0)."""
        return self.rank == 0

    def seed(self, seed: int) -> int:
        """This worker's training seed: ``seed`` on worker 0, one derived from it elsewhere."""
        if self.rank == 0:
            return seed
        return int(np.random.SeedSequence([seed, self.rank]).generate_state(1)[0])

    def share(self, index: torch.Tensor) -> torch.Tensor:
        """This worker's rows of the batch ``index`` (a contiguous ``1 / world`` of it)."""
        rows = len(index) // self.world
        return index[self.rank * rows : (self.rank + 1) * rows]

    def gather(self, embeddings: torch.Tensor, items: torch.Tensor) -> tuple[Any, Any, int]:
        """The whole batch's item ``embeddings`` (with their gradients) and ``items``, from this
        worker's, and where this worker's rows start in it."""
        if self.world == 1:
            return embeddings, items, 0
        import torch.distributed.nn.functional as dist_nn

        every = torch.cat(dist_nn.all_gather(embeddings))
        all_items = [torch.empty_like(items) for _ in range(self.world)]
        dist.all_gather(all_items, items)
        return every, torch.cat(all_items), self.rank * len(items)

    def embed_shared(self, embed: Callable[[torch.Tensor], torch.Tensor], n: int) -> torch.Tensor:
        """``embed(rows)`` of all ``n`` rows (with their gradients), each worker embedding an
        equal share of them (the catalogue of the full softmax: its tower's work divides among
        the workers instead of being repeated by each)."""
        if self.world == 1:
            return embed(torch.arange(n))
        import torch.distributed.nn.functional as dist_nn

        share = -(-n // self.world)
        rows = torch.arange(self.rank * share, (self.rank + 1) * share).clamp(max=n - 1)
        return torch.cat(dist_nn.all_gather(embed(rows)))[:n]  # the padding's copies dropped

    def average(self, model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
        """Average the gradients and ``loss`` over the workers; the mean loss. Two all-reduces:
        which rows of the tall gradients (embedding tables of :data:`SPARSE_ROWS` rows or more,
        such as the articles' ids) any worker touched, then every other gradient, those rows
        and the loss in one buffer. A batch touches a few hundred of an id table's rows, so
        this sends them instead of the whole table (105,542 x 128 floats for H&M's articles),
        and the average is the same: the rows nobody touched are 0 on every worker. A sparse
        gradient (``id_updates="sparse"``) names its rows; a dense one is searched for them,
        and the average of a sparse one is sparse, over every worker's rows."""
        if self.world == 1:
            return loss
        parameters = [p for p in model.parameters() if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        grads = [g.coalesce() if g.is_sparse else g for g in grads]
        tall = [i for i, g in enumerate(grads) if g.ndim == 2 and len(g) >= SPARSE_ROWS]
        touched = loss.new_zeros(sum(len(grads[i]) for i in tall))
        offset = 0
        for i in tall:
            if grads[i].is_sparse:
                touched[offset + grads[i].indices()[0]] = 1
            else:
                touched[offset : offset + len(grads[i])] = (grads[i] != 0).any(dim=1)
            offset += len(grads[i])
        if len(touched):
            dist.all_reduce(touched)
        rows, offset = {}, 0
        for i in tall:
            rows[i] = torch.nonzero(touched[offset : offset + len(grads[i])]).squeeze(1)
            offset += len(grads[i])
        parts = [_rows_of(grads[i], rows[i]) if i in rows else grads[i] for i in range(len(grads))]
        flat = torch.cat([part.reshape(-1) for part in parts] + [loss.detach().reshape(1)])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for i, (parameter, part) in enumerate(zip(parameters, parts, strict=True)):
            values = flat[offset : offset + part.numel()].view_as(part)
            offset += part.numel()
            if i not in rows:
                parameter.grad = values
            elif grads[i].is_sparse:
                parameter.grad = torch.sparse_coo_tensor(
                    rows[i].unsqueeze(0), values, grads[i].shape, is_coalesced=True
                )
            else:  # the rows nobody touched are 0 in this worker's gradient already
                grads[i][rows[i]] = values
                parameter.grad = grads[i]
        return flat[-1]

    def gather_object(self, value: Any) -> list[Any]:
        """``value`` of every worker, by rank."""
        if self.world == 1:
            return [value]
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def last_checkpoint(self) -> dict[str, Any] | None:
        """The run's last checkpoint (the one resumed, or the last a failed group sent)."""
        data = _ray_get(self.mailbox.last_checkpoint.remote())
        return None if data is None else _from_bytes(data)

    def save(self, path: Path | None, state: dict[str, Any]) -> None:
        """Checkpoint ``state``: the driver writes it to ``path``."""
        self.send("checkpoint", state)

    def send(self, kind: str, value: Any) -> None:
        """Send (worker 0 only) ``value`` to the driver: ``checkpoint`` and ``result`` states
        (serialised here), ``progress`` steps (at most every :data:`REPORT_EVERY_S`)."""
        if not self.main:
            return
        if kind == "progress":
            step, total = value
            now = time.monotonic()
            if now - self.last_report < REPORT_EVERY_S and step not in (0, total):
                return
            self.last_report = now
        else:
            value = _to_bytes(value)
        self.mailbox.send.remote(kind, value)


def _rows_of(grad: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """The ``rows`` (sorted) of the gradient ``grad``, dense; of a coalesced sparse one, its
    rows among them and zeros elsewhere."""
    if not grad.is_sparse:
        return grad[rows]
    values = grad.values().new_zeros((len(rows), *grad.shape[1:]))
    values[torch.searchsorted(rows, grad.indices()[0])] = grad.values()
    return values


def _ray_get(ref: Any) -> Any:
    import ray

    return ray.get(ref)


def _worker(context: dict[str, Any]) -> None:
    """The training function of every Ray Train worker."""
    import ray
    from ray import train as ray_train

    ray_context = ray_train.get_context()
    parallel = DataParallel(
        ray_context.get_world_rank(), ray_context.get_world_size(), context["mailbox"]
    )
    model, log, env = ray.get(context["inputs"])
    context["train"](model, log, env, parallel=parallel, **context["options"])


def train_on_ray(
    train_one: Callable[..., Any],
    model: nn.Module,
    log: Any,
    env: Any,
    config: Any,
    checkpoint: Path | None,
    resume: bool,
    report: Callable[[int, int], None],
    address: str | None = None,
    **options: Any,
) -> Any:
    """Run ``train_one`` (the trainer's loop) on ``config.workers`` Ray Train workers and
    return worker 0's result. ``checkpoint``: the run's checkpoint file, or None; the driver
    reads it to resume and writes every checkpoint worker 0 sends. ``report(step, total)``
    is called here, in the driver, as worker 0 makes progress."""
    workers = config.workers
    threads = config.threads or 1
    ray = start_ray(workers, address, threads, "training on several workers")
    try:
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer
    except ImportError as err:  # ray without its train extra (pydantic)
        raise ModuleNotFoundError(
            f'training on several workers needs Ray Train ({err}): pip install "recsim-ft[ray]"'
        ) from None
    saved = (
        checkpoint.read_bytes()
        if checkpoint is not None and resume and checkpoint.exists()
        else None
    )
    mailbox = ray.remote(num_cpus=0)(_Mailbox).remote(saved)
    context = {
        "train": train_one,
        "mailbox": mailbox,
        "inputs": ray.put((model, log, env)),
        "options": {"config": config, "resume": saved is not None, **options},
    }
    with tempfile.TemporaryDirectory(prefix="recsim-ft-ray-") as storage:
        trainer = TorchTrainer(
            _worker,
            train_loop_config=context,
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=False, resources_per_worker={"CPU": threads}
            ),
            run_config=RunConfig(
                storage_path=storage,
                name="train",
                failure_config=FailureConfig(max_failures=MAX_FAILURES),
            ),
        )
        outcome: dict[str, Any] = {}

        def fit() -> None:
            try:
                trainer.fit()
            except BaseException as err:  # re-raised in the driver's thread
                outcome["error"] = err

        runner = threading.Thread(target=fit, daemon=True)
        runner.start()
        result = None
        while True:
            finished = not runner.is_alive()
            for kind, value in ray.get(mailbox.take.remote()):
                if kind == "progress":
                    report(*value)
                elif kind == "checkpoint" and checkpoint is not None:
                    with atomic_path(checkpoint) as tmp:
                        tmp.write_bytes(value)
                elif kind == "result":
                    result = _from_bytes(value)
            if finished:
                break
            runner.join(REPORT_EVERY_S)
    if "error" in outcome:
        error = outcome["error"]
        cause = getattr(error, "__cause__", None) or error
        raise RuntimeError(f"training on {workers} Ray workers failed: {cause}") from error
    if result is None:
        raise RuntimeError(f"training on {workers} Ray workers ended without a result")
    return result
