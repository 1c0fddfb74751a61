"""Where candidates train. The driver (:mod:`hwsearch.search.engine._runner`) asks the sampler, prices, decides and
tells; an executor only runs :class:`TrialWorker` calls on its slots and hands back what they
returned. It never sees the study.

Three executors, one contract:

- ``inline``: one slot, in the driver's own process (``workers: 1``, the default);
- ``pool``: one spawned process per slot on this machine (``workers > 1``, no Ray needed);
- ``ray``: one Ray actor per slot, on a local Ray instance or a cluster (``--backend ray``).

What the runner relies on:

- at most one call is in flight per slot; :meth:`submit` returns at once;
- :meth:`poll` blocks until at least one call has finished and returns ``(slot, outcome)`` pairs,
  where the outcome is the call's return value, the exception it raised, or a :class:`WorkerLost`
  when the worker itself died (killed, out of memory, its node lost);
- after a :class:`WorkerLost`, :meth:`replace` gives the slot a fresh worker;
- the dataset and the teacher's logits reach each worker once, when it starts (on Ray: put in the
  object store once, shared by every actor on a node); a call carries a candidate string and a few
  numbers.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np

from hwsearch.search.errors import SearchError
from hwsearch.search.training._datasets import Data
from hwsearch.search.training._evaluate import Evaluation, TrainSettings, evaluation_steps
from hwsearch.spaces._candidate import Candidate

Evaluator = Callable[..., Generator[tuple[int, float], None, Evaluation]]


@dataclass(frozen=True)
class Rung:
    """A candidate reached a rung of early stopping: its validation accuracy after ``epoch`` dense
    epochs. It waits, paused, for :meth:`TrialWorker.advance`."""

    epoch: int
    accuracy: float


class WorkerLost(SearchError, RuntimeError):
    """The worker process died during a call; the slot needs :meth:`replace`."""


@dataclass(frozen=True)
class WorkerSetup:
    """Everything a worker gets once, at its start."""

    data: Data
    teacher: np.ndarray | None
    settings: TrainSettings
    threads: int | None = None  # torch intra-op threads; None leaves torch's default
    evaluator: Evaluator = evaluation_steps  # a module-level generator function (it is pickled)
    warm_up: bool = False  # a fresh process: pay torch's one-time costs before the first trial


class TrialWorker:
    """Trains one candidate at a time where it lives: the driver's process, a pool process or a
    Ray actor. A candidate runs until the next rung asked for (or to the end), and then waits
    there; starting another candidate abandons a paused one."""

    def __init__(self, setup: WorkerSetup) -> None:
        if setup.threads:
            import torch

            torch.set_num_threads(setup.threads)
        # Ray hands numpy arrays over as read-only views of its object store; training never writes them.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        self.setup = setup
        self._steps: Generator[Any, None, Evaluation] | None = None
        if setup.warm_up:
            _warm_up(setup.data)

    def start(self, candidate: str, seed: int, keep_weights: bool, until: int | None) -> Rung | Evaluation:
        s = self.setup
        self._abandon()
        self._steps = s.evaluator(Candidate.from_string(candidate), s.data, s.teacher, s.settings, seed,
                                  keep_weights)
        return self.advance(until)

    def advance(self, until: int | None) -> Rung | Evaluation:
        """Train to dense epoch ``until`` (None: to the end) and return a :class:`Rung`, or the
        :class:`Evaluation` when the candidate finished."""
        if self._steps is None:
            raise RuntimeError("no candidate is paused on this worker")
        try:
            while True:
                epoch, acc = next(self._steps)
                if until is not None and epoch >= until:
                    return Rung(epoch, acc)
        except StopIteration as done:
            self._steps = None
            return done.value
        except BaseException:
            self._steps = None
            raise

    def pid(self) -> int:
        return os.getpid()

    def _abandon(self) -> None:
        if self._steps is not None:
            self._steps.close()
            self._steps = None


def _warm_up(data: Data) -> None:
    """One training step and one quantized forward pass of a small network on a real batch: a new
    process's first trial would otherwise also pay the lazy imports and oneDNN's first kernels
    (about a second here)."""
    import torch

    from hwsearch.spaces import network
    from hwsearch.spaces._plan import build_plan

    plan = build_plan(Candidate.from_string("c8:ir_r1_k3_e3_c8_re_p0.5_w8a8"), data.input_shape, data.num_classes)
    x = torch.as_tensor(data.x_train[:64])
    net = network.build(plan, torch.Generator().manual_seed(0))
    net(x).sum().backward()
    net = network.enable_quantization(network.fold_batchnorm(network.prune(net.eval())))
    net.train()
    net(x).sum().backward()


class InlineExecutor:
    """One slot, run in the caller's process: no start-up, no copies. A crash here is the
    driver's crash (re-running resumes)."""

    name = "inline"

    def __init__(self, setup: WorkerSetup) -> None:
        self.slots = 1
        self._worker = TrialWorker(setup)
        self._done: list[tuple[int, Any]] = []

    def submit(self, slot: int, method: str, *args) -> None:
        try:
            self._done.append((slot, getattr(self._worker, method)(*args)))
        except Exception as e:  # handed back as the outcome, like the other executors do
            self._done.append((slot, e))

    def poll(self) -> list[tuple[int, Any]]:
        done, self._done = self._done, []
        return done

    def replace(self, slot: int) -> None:
        self._worker = TrialWorker(self._worker.setup)

    def close(self) -> None:
        self._worker._abandon()


# In each pool process: its one worker, created by the pool's initializer.
_POOL_WORKER: list[TrialWorker] = []


def _pool_start(setup: WorkerSetup) -> None:
    _POOL_WORKER[:] = [TrialWorker(setup)]


def _pool_call(method: str, args: tuple):
    return getattr(_POOL_WORKER[0], method)(*args)


class PoolExecutor:
    """One spawned process per slot (a single-process ``ProcessPoolExecutor`` each, so a paused
    candidate's next call reaches the process that holds it). A killed process breaks only its own
    slot's pool."""

    name = "pool"

    def __init__(self, setup: WorkerSetup, slots: int) -> None:
        from dataclasses import replace

        self.slots = slots
        self._setup = replace(setup, warm_up=True)
        self._pools = [self._new_pool() for _ in range(slots)]
        self._futures: dict = {}
        # Start every process now (spawn, import torch, receive the data): a start-up failure shows
        # here, and the search's first trials do not pay for it.
        for pool in self._pools:
            pool.submit(_pool_call, "pid", ()).result()

    def _new_pool(self):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=_pool_start,
                                   initargs=(self._setup,))

    def submit(self, slot: int, method: str, *args) -> None:
        from concurrent.futures import Future
        from concurrent.futures.process import BrokenProcessPool

        try:
            fut = self._pools[slot].submit(_pool_call, method, args)
        except BrokenProcessPool as e:  # the process died while idle: the call's outcome says so
            fut = Future()
            fut.set_exception(e)
        self._futures[fut] = slot

    def poll(self) -> list[tuple[int, Any]]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        done, _ = wait(self._futures, return_when=FIRST_COMPLETED)
        out = []
        for fut in done:
            slot = self._futures.pop(fut)
            try:
                out.append((slot, fut.result()))
            except BrokenProcessPool as e:
                out.append((slot, WorkerLost(f"worker process died ({e})")))
            except Exception as e:
                out.append((slot, e))
        return out

    def replace(self, slot: int) -> None:
        self._pools[slot].shutdown(wait=False, cancel_futures=True)
        self._pools[slot] = self._new_pool()

    def close(self) -> None:
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """One Ray actor per slot, each reserving ``cpus``/``gpus`` from the cluster. The data go into
    the object store once (``ray.put``) and every actor reads them from there.

    ``address`` None starts a private local Ray instance (stopped by :meth:`close`); otherwise it
    joins a running cluster (``ray start --head`` ...). Slots beyond what the cluster can hold at
    once are not created, and ``log`` says so.
    """

    name = "ray"

    def __init__(self, setup: WorkerSetup, slots: int, address: str | None, cpus: float, gpus: float,
                 log: Callable[[str], None]) -> None:
        import ray

        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
            log("warning: RAY_AUTH_MODE=disabled: Ray's processes accept anyone who can reach this "
                "machine's ports (they listen on every interface); see the README's Ray section")
        if self._owns_ray:
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     logging_level=logging.WARNING, configure_logging=False)
        total = ray.cluster_resources()
        fit = int(total.get("CPU", 0) // cpus) if cpus else slots
        if gpus:
            fit = min(fit, int(total.get("GPU", 0) // gpus))
        if fit < 1:
            self.close()
            raise RuntimeError(f"the Ray cluster has {total.get('CPU', 0):g} CPUs and {total.get('GPU', 0):g} "
                               f"GPUs; a trial asks for {cpus:g} CPUs and {gpus:g} GPUs")
        if fit < slots:
            log(f"the Ray cluster holds {fit} trials at once ({total.get('CPU', 0):g} CPUs, "
                f"{total.get('GPU', 0):g} GPUs), not {slots}: running {fit}")
            slots = fit
        self.slots = slots
        # once into the object store; each actor's constructor receives it from there
        shared = WorkerSetup(data=None, teacher=None, settings=setup.settings, threads=setup.threads,  # type: ignore[arg-type]
                             evaluator=setup.evaluator, warm_up=True)
        self._refs = (ray.put(setup.data), ray.put(setup.teacher), ray.put(shared))
        self._cls = ray.remote(_RayWorker).options(num_cpus=cpus, num_gpus=gpus, max_restarts=0,
                                                   max_task_retries=0)
        self._actors = [self._new_actor() for _ in range(slots)]
        self._pending: dict = {}
        ray.get([a.pid.remote() for a in self._actors])  # every actor started, with its data

    def _new_actor(self):
        return self._cls.remote(*self._refs)

    def submit(self, slot: int, method: str, *args) -> None:
        self._pending[getattr(self._actors[slot], method).remote(*args)] = slot

    def poll(self) -> list[tuple[int, Any]]:
        ray = self._ray
        ready, _ = ray.wait(list(self._pending), num_returns=1)
        more, _ = ray.wait([r for r in self._pending if r not in ready], num_returns=len(self._pending) - 1,
                           timeout=0) if len(self._pending) > 1 else ([], [])
        out = []
        for ref in ready + more:
            slot = self._pending.pop(ref)
            try:
                out.append((slot, ray.get(ref)))
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as e:
                out.append((slot, WorkerLost(f"Ray worker died: {str(e).splitlines()[0]}")))
            except ray.exceptions.RayTaskError as e:
                out.append((slot, e.as_instanceof_cause()))
        return out

    def replace(self, slot: int) -> None:
        try:
            self._ray.kill(self._actors[slot], no_restart=True)
        except Exception:  # already gone
            pass
        self._actors[slot] = self._new_actor()

    def close(self) -> None:
        for actor in getattr(self, "_actors", []):
            try:
                self._ray.kill(actor, no_restart=True)
            except Exception:
                pass
        if self._owns_ray:
            self._ray.shutdown()


class _RayWorker(TrialWorker):
    """The Ray actor: a :class:`TrialWorker` whose data come from the object store."""

    def __init__(self, data: Data, teacher: np.ndarray | None, setup: WorkerSetup) -> None:
        from dataclasses import replace

        super().__init__(replace(setup, data=data, teacher=teacher))
