"""PPO over continuous parameters θ ∈ [0, 1]^d: ``ppo_maximize(objective, dim, PPOConfig(...))``.

The search of Parameterized AP Loss (Tao et al., NeurIPS 2021) and Auto
Seg-Loss (Li et al., ICLR 2021): a policy, a truncated normal on [0, 1]^d,
proposes ``samples`` parameter vectors per round; each is scored by the
objective (a proxy training's AP or mIoU); the policy's mean is then moved by
``updates`` Adam steps on PPO's clipped surrogate, the old log-probabilities
fixed. As in the official Parameterized AP Loss code:

- the mean is learned through its logit (``mean = sigmoid(z)``), starting at
  ``initial`` (default 0.5 everywhere); σ is not learned but annealed linearly
  over the rounds, the same for every coordinate. Round ``t`` (0-based) samples
  with ``σ_t = sigma_start + (sigma_end - sigma_start) · t / (rounds - 1)``;
  the defaults (0.2 to 0.005 over 40 rounds) give exactly the official
  ``σ_t = 0.2 · (1 - t/40)``. The update after round ``t`` scores the new
  policy with the next round's σ, ``σ_{t+1}`` (``σ_t`` after the last round),
  against the old log-probabilities under ``σ_t``;
- advantage = reward − the round's mean reward (no division by the standard
  deviation: neither official code divides, and with Adam restarted each round
  scaling one round's advantages by a constant would change the steps only
  through Adam's ε);
- the ratio is clipped per coordinate: each coordinate's log-ratio is clamped
  to ``[log(1 - clip), log(1 + clip)]`` before the sum over coordinates, and
  the loss is ``-mean_i min(r_i A_i, r_i^clip A_i)``;
- a fresh Adam (lr ``lr``, β = (0.9, 0.999)) per round, its learning rate
  warmed up linearly over the first 30 % of the updates and then decayed
  linearly (the official 30 of 100, starting at 0);
- a failed evaluation (an exception, NaN, anything not a number, ``None``)
  gets reward ``failed_reward`` (0, as the official code gives a diverged
  training) and is recorded with its reason.

Evaluations run through the shared :class:`~gp_loss.runtime.backend.Backend`
(``workers`` at a time, results kept in submission order); every random choice
comes from a ``torch.Generator`` seeded from ``(seed, round)``, and θ is drawn
in this process, so a run is a function of its seed whatever the map. With a
``run_dir`` a checkpoint (JSON, :mod:`gp_loss.runtime.checkpoint`) is saved
after every result and every round, and ``results.json`` after every round;
``resume=True`` continues exactly: the θ of an unfinished round are kept and
only its missing evaluations are run. ``results.json`` is :meth:`PPOResult.to_json`
(``stopped`` is ``running`` until the run ends); nothing is stored pickled.
Between rounds there is no optimiser or generator state to keep (Adam restarts
each round, the generator is seeded per round): the checkpoint holds the mean's
logits, the rounds done, the history and the unfinished round. Same shape as
:func:`gp_loss.hps.maximize`.
"""
from __future__ import annotations

import json
import math
import numbers
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gp_loss.errors import GpLossError
from gp_loss.hps.evaluation import evaluate
from gp_loss.hps.space import check_seed
from gp_loss.runtime.atomic import write_text_atomic
from gp_loss.runtime.checkpoint import open_run, save_checkpoint
from gp_loss.runtime.backend import Backend
from gp_loss.runtime.parallel import backend_for_job

CHECKPOINT_VERSION = 1
RESULTS = "results.json"
WARMUP_FRACTION = 0.3  # of the updates: the official 30 of 100
DTYPE = torch.float64


# -- configuration ---------------------------------------------------------------


def _count(value, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise GpLossError(f"{what} must be an integer of at least {minimum}, got {value!r}")
    return int(value)


def _real(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise GpLossError(f"{what} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PPOConfig:
    """The search's settings; the defaults are the official Parameterized AP Loss search's.

    ``rounds`` rounds of ``samples`` evaluations; σ annealed linearly from
    ``sigma_start`` (round 0) to ``sigma_end`` (the last round); ``clip``: PPO's
    ε, per coordinate; ``lr`` and ``updates``: Adam's learning rate and steps
    per round; ``failed_reward``: the reward of a failed evaluation; ``seed``:
    every random choice. Bad values raise a one-line :class:`GpLossError`.
    """

    rounds: int = 40
    samples: int = 8
    sigma_start: float = 0.2
    sigma_end: float = 0.005
    clip: float = 0.1
    lr: float = 0.01
    updates: int = 100
    failed_reward: float = 0.0
    seed: int = 0

    def __post_init__(self):
        _count(self.rounds, "rounds", 1)
        _count(self.samples, "samples", 2)  # one sample's advantage is always 0: nothing to learn
        _count(self.updates, "updates", 1)
        for name in ("sigma_start", "sigma_end", "lr"):
            if _real(getattr(self, name), name) <= 0:
                raise GpLossError(f"{name} must be positive, got {getattr(self, name)!r}")
        if not 0 < _real(self.clip, "clip") < 1:
            raise GpLossError(f"clip must lie strictly between 0 and 1, got {self.clip!r}")
        _real(self.failed_reward, "failed_reward")
        check_seed(self.seed)

    def sigma(self, round_index: int) -> float:
        """σ of round ``round_index`` (0-based); past the last round, the last round's."""
        if self.rounds == 1:
            return float(self.sigma_start)
        t = min(round_index, self.rounds - 1)
        return float(self.sigma_start + (self.sigma_end - self.sigma_start) * t / (self.rounds - 1))

    def lr_factor(self, step: int) -> float:
        """The learning rate's factor at update ``step`` (0-based) of a round: linear warm-up, then linear decay."""
        warmup = round(WARMUP_FRACTION * self.updates)
        if step < warmup:
            return step / warmup
        return 1.0 - (step - warmup) / (self.updates - warmup)


# -- the truncated normal on [0, 1] ----------------------------------------------


def truncated_normal_sample(mean: torch.Tensor, sigma: float, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` draws, shape ``(n, d)``, of the normal ``N(mean, σ²)`` truncated to ``[0, 1]`` per coordinate.

    Inverse CDF: ``x = mean + σ Φ⁻¹(Φ(α) + u (Φ(β) − Φ(α)))`` with ``u`` uniform,
    ``α = -mean/σ``, ``β = (1 - mean)/σ``; clamped to ``[0, 1]`` against rounding.
    """
    mean = mean.detach().to(DTYPE)
    u = torch.rand((n, mean.numel()), generator=generator, dtype=DTYPE)
    low = torch.special.ndtr((0.0 - mean) / sigma)
    high = torch.special.ndtr((1.0 - mean) / sigma)
    p = low + u * (high - low)
    tiny = torch.finfo(DTYPE).tiny
    p = p.clamp(tiny, 1.0 - torch.finfo(DTYPE).eps)
    return (mean + sigma * torch.special.ndtri(p)).clamp(0.0, 1.0)


def truncated_normal_log_prob(x: torch.Tensor, mean: torch.Tensor, sigma: float) -> torch.Tensor:
    """Per-coordinate log-density at ``x`` of ``N(mean, σ²)`` truncated to ``[0, 1]``.

    The normal's log-density minus ``log(Φ(β) − Φ(α))``, ``α = -mean/σ``,
    ``β = (1 - mean)/σ``; ``-inf`` outside ``[0, 1]``; differentiable in ``mean``.
    """
    z = (x - mean) / sigma
    normal = -0.5 * z * z - math.log(sigma) - 0.5 * math.log(2 * math.pi)
    mass = torch.special.ndtr((1.0 - mean) / sigma) - torch.special.ndtr((0.0 - mean) / sigma)
    log_prob = normal - torch.log(mass)
    inside = (x >= 0) & (x <= 1)
    return torch.where(inside, log_prob, torch.full_like(log_prob, -math.inf))


def round_generator(seed: int, round_index: int) -> torch.Generator:
    """The generator of one round: a function of ``(seed, round)`` only, so a resumed run draws alike."""
    state = np.random.SeedSequence([int(seed), int(round_index)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def ppo_update(mean_logit: torch.Tensor, thetas: torch.Tensor, rewards: torch.Tensor, sigma_old: float,
               sigma_new: float, config: PPOConfig) -> torch.Tensor:
    """The policy's mean logits after one round's ``config.updates`` Adam steps on the clipped surrogate."""
    advantages = rewards - rewards.mean()
    with torch.no_grad():
        old = truncated_normal_log_prob(thetas, torch.sigmoid(mean_logit), sigma_old)
    param = mean_logit.detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([param], lr=config.lr)
    low, high = math.log(1.0 - config.clip), math.log(1.0 + config.clip)
    for step in range(config.updates):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * config.lr_factor(step)
        log_ratio = truncated_normal_log_prob(thetas, torch.sigmoid(param), sigma_new) - old
        ratio = log_ratio.sum(dim=-1).exp()
        clipped = log_ratio.clamp(low, high).sum(dim=-1).exp()
        loss = -torch.minimum(ratio * advantages, clipped * advantages).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return param.detach()


# -- the run -----------------------------------------------------------------------


@dataclass
class PPOResult:
    """What :func:`ppo_maximize` found.

    ``history``: one dict per evaluation, by round and then in submission
    order: ``round``, ``index``, ``theta``, ``reward`` (the value, or
    ``failed_reward`` for a failed one), ``status`` (``ok`` or ``failed``),
    ``error`` (the reason, or ``None``). ``best_theta`` / ``best_reward``: the
    best successful evaluation (the first of equals), ``None`` if none
    succeeded. ``mean``: the policy's mean after the last round done (the
    official code's searched result). ``rounds``: per round, the mean and σ it
    sampled with and its mean reward. ``stopped``: ``budget`` (all rounds done)
    or ``time`` (``max_seconds``). ``seconds``: wall time over every session.
    """

    best_theta: list[float] | None
    best_reward: float | None
    history: list[dict]
    rounds_done: int
    stopped: str
    mean: list[float]
    rounds: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def best_x(self) -> list[float] | None:  # the names of gp_loss.hps.Result
        return self.best_theta

    @property
    def best_value(self) -> float | None:
        return self.best_reward

    def to_json(self) -> dict:
        return {"best_theta": self.best_theta, "best_reward": self.best_reward, "rounds_done": self.rounds_done,
                "stopped": self.stopped, "mean": self.mean, "rounds": self.rounds, "seconds": self.seconds,
                "history": self.history}


class _Run:
    """The mutable state of one run, and its checkpoint form."""

    def __init__(self, dim: int, config: PPOConfig, initial: list[float]):
        self.dim, self.config, self.initial = dim, config, initial
        self.mean_logit = torch.logit(torch.tensor(initial, dtype=DTYPE))
        self.rounds_done = 0
        self.history: list[dict] = []
        self.rounds: list[dict] = []
        self.pending: dict | None = None  # {"thetas": [[...]], "results": [None | {"value", "error"}]}
        self.elapsed = 0.0

    def signature(self) -> dict:
        return {"dim": self.dim, "initial": self.initial, **asdict(self.config)}

    def to_state(self) -> dict:
        return {"version": CHECKPOINT_VERSION, "signature": self.signature(),
                "mean_logit": self.mean_logit.tolist(), "rounds_done": self.rounds_done,
                "history": self.history, "rounds": self.rounds, "pending": self.pending, "elapsed": self.elapsed}

    def load_state(self, state: dict) -> None:
        if state.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"version {state.get('version')!r}, expected {CHECKPOINT_VERSION}")
        theirs, ours = state["signature"], self.signature()
        for key in ours:
            if key not in theirs:
                raise KeyError(f"signature.{key}")
        differ = [f"{k} {theirs[k]!r} (now {ours[k]!r})" for k in ours if theirs[k] != ours[k]]
        if differ:
            raise GpLossError("the checkpoint is of a run with other settings: " + ", ".join(differ)
                              + "; resume with the same settings or use another run directory")
        logits = [float(v) for v in state["mean_logit"]]
        if len(logits) != self.dim:
            raise ValueError(f"a mean of {len(logits)} coordinates, expected {self.dim}")
        self.mean_logit = torch.tensor(logits, dtype=DTYPE)
        self.rounds_done = int(state["rounds_done"])
        self.history = [_history_entry(h, self.dim) for h in state["history"]]
        self.rounds = [{"round": int(r["round"]), "mean": [float(v) for v in r["mean"]],
                        "sigma": float(r["sigma"]), "mean_reward": float(r["mean_reward"])} for r in state["rounds"]]
        if len(self.history) != self.rounds_done * self.config.samples or len(self.rounds) != self.rounds_done:
            raise ValueError(f"{len(self.history)} evaluations and {len(self.rounds)} round records "
                             f"for {self.rounds_done} rounds")
        pending = state["pending"]
        if pending is not None:
            thetas = [[float(v) for v in theta] for theta in pending["thetas"]]
            results = [None if r is None else {"value": None if r["value"] is None else float(r["value"]),
                                               "error": None if r["error"] is None else str(r["error"])}
                       for r in pending["results"]]
            if len(thetas) != self.config.samples or len(results) != self.config.samples \
                    or any(len(theta) != self.dim for theta in thetas):
                raise ValueError("the unfinished round's samples do not match the settings")
            pending = {"thetas": thetas, "results": results}
        self.pending = pending
        self.elapsed = float(state["elapsed"])

    def best(self) -> tuple[list[float] | None, float | None]:
        best_theta, best_reward = None, None
        for h in self.history:
            if h["status"] == "ok" and (best_reward is None or h["reward"] > best_reward):
                best_theta, best_reward = h["theta"], h["reward"]
        return best_theta, best_reward

    def done(self) -> int:
        """Evaluations with a result: the finished rounds' and those of the unfinished one."""
        pending = 0 if self.pending is None else sum(r is not None for r in self.pending["results"])
        return len(self.history) + pending

    def best_so_far(self) -> tuple[list[float] | None, float | None]:
        """:meth:`best` with the results of the unfinished round counted too (for progress on screen)."""
        best_theta, best_reward = self.best()
        if self.pending is not None:
            for theta, r in zip(self.pending["thetas"], self.pending["results"]):
                if r is not None and r["value"] is not None and (best_reward is None or r["value"] > best_reward):
                    best_theta, best_reward = theta, r["value"]
        return best_theta, best_reward

    def mean(self) -> list[float]:
        return torch.sigmoid(self.mean_logit).tolist()

    def sample_round(self) -> None:
        generator = round_generator(self.config.seed, self.rounds_done)
        thetas = truncated_normal_sample(torch.sigmoid(self.mean_logit), self.config.sigma(self.rounds_done),
                                         self.config.samples, generator)
        self.pending = {"thetas": thetas.tolist(), "results": [None] * self.config.samples}

    def finish_round(self) -> None:
        """The round's rewards into the history, and the policy update."""
        t, cfg = self.rounds_done, self.config
        rewards = []
        for index, (theta, r) in enumerate(zip(self.pending["thetas"], self.pending["results"])):
            ok = r["value"] is not None
            reward = r["value"] if ok else float(cfg.failed_reward)
            rewards.append(reward)
            self.history.append({"round": t, "index": index, "theta": theta, "reward": reward,
                                 "status": "ok" if ok else "failed", "error": r["error"]})
        self.rounds.append({"round": t, "mean": self.mean(), "sigma": cfg.sigma(t),
                            "mean_reward": float(math.fsum(rewards) / len(rewards))})
        next_sigma = cfg.sigma(t + 1)  # past the last round: the last round's σ
        self.mean_logit = ppo_update(self.mean_logit, torch.tensor(self.pending["thetas"], dtype=DTYPE),
                                     torch.tensor(rewards, dtype=DTYPE), cfg.sigma(t), next_sigma, cfg)
        self.pending = None
        self.rounds_done += 1

    def result(self, stopped: str) -> PPOResult:
        best_theta, best_reward = self.best()
        return PPOResult(best_theta=None if best_theta is None else list(best_theta), best_reward=best_reward,
                         history=[dict(h, theta=list(h["theta"])) for h in self.history],
                         rounds_done=self.rounds_done, stopped=stopped, mean=self.mean(),
                         rounds=[dict(r) for r in self.rounds], seconds=self.elapsed)


def _history_entry(h: dict, dim: int) -> dict:
    theta = [float(v) for v in h["theta"]]
    if len(theta) != dim:
        raise ValueError(f"a θ of {len(theta)} coordinates, expected {dim}")
    if h["status"] not in ("ok", "failed"):
        raise ValueError(f"status {h['status']!r}")
    return {"round": int(h["round"]), "index": int(h["index"]), "theta": theta, "reward": float(h["reward"]),
            "status": h["status"], "error": None if h["error"] is None else str(h["error"])}


def _check_initial(initial, dim: int) -> list[float]:
    if initial is None:
        return [0.5] * dim
    try:
        values = list(initial)
    except TypeError:
        raise GpLossError(f"initial must be a list of {dim} numbers, got {type(initial).__name__}") from None
    if len(values) != dim:
        raise GpLossError(f"initial has {len(values)} values, expected dim = {dim}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not 0 < float(v) < 1:
            raise GpLossError(f"initial[{i}] must lie strictly between 0 and 1 (the mean is learned through "
                              f"its logit), got {v!r}")
    return [float(v) for v in values]


def ppo_maximize(objective: Callable[[list[float]], float], dim: int, config: PPOConfig | None = None, *,
                 initial: list[float] | None = None, mapper: Backend | None = None, workers: int = 1,
                 run_dir: str | os.PathLike | None = None, resume: bool = False,
                 max_seconds: float | None = None, progress: Callable[[dict], None] | None = None) -> PPOResult:
    """Maximise ``objective(θ: list of d floats in [0, 1]) -> float`` by PPO on a truncated normal policy.

    ``config``: :class:`PPOConfig` (default: the official settings). ``initial``:
    the policy's starting mean, each coordinate strictly inside (0, 1) (default
    0.5). ``mapper``: a :class:`~gp_loss.runtime.backend.Backend` whose workers
    evaluate a round's samples (``workers`` > 1 without one starts a
    multiprocessing one; the objective must then pickle); default serial.
    ``run_dir``: checkpoint after every result and round, ``results.json``
    after every round; ``resume=True`` continues the run saved there (same
    dim, initial and config, else a one-line error). ``max_seconds``: start no
    new round after this wall time (over every session; a started round is
    finished). ``progress``: called with ``{"done", "budget"}`` (evaluations) when the loop starts,
    resumed ones included, then after each result with its ``round``, ``x`` (θ), ``value``, ``error``,
    ``best_x``, ``best_value`` and ``seconds`` (wall time over every session) too. Bad input raises
    :class:`GpLossError`.
    """
    if config is None:
        config = PPOConfig()
    if not isinstance(config, PPOConfig):
        raise GpLossError(f"config must be a PPOConfig, got {type(config).__name__}")
    dim = _count(dim, "dim", 1)
    workers = _count(workers, "workers", 1)
    initial = _check_initial(initial, dim)
    if max_seconds is not None and not (isinstance(max_seconds, (int, float)) and not isinstance(max_seconds, bool)
                                        and max_seconds > 0 and math.isfinite(max_seconds)):
        raise GpLossError(f"max_seconds must be a positive number of seconds, got {max_seconds!r}")
    if not callable(objective):
        raise GpLossError(f"objective must be callable, got {type(objective).__name__}")
    run = _Run(dim, config, initial)
    path = None if run_dir is None else Path(run_dir)
    open_run(run.load_state, path, resume)

    with backend_for_job(mapper, workers, objective) as backend:
        stopped = _loop(run, objective, backend, max_seconds, path, progress)
    return _finish(run, stopped, path)


def _finish(run: _Run, stopped: str, run_dir: Path | None) -> PPOResult:
    result = run.result(stopped)
    if run_dir is not None:
        _write_results(run_dir, result)
    return result


def _write_results(run_dir: Path, result: PPOResult) -> None:
    write_text_atomic(run_dir / RESULTS, json.dumps(result.to_json(), indent=1, allow_nan=False) + "\n")


def _loop(run: _Run, objective, mapper: Backend, max_seconds: float | None, run_dir: Path | None,
          progress: Callable[[dict], None] | None = None) -> str:
    """Run rounds until ``config.rounds`` are done or the time is up; returns why it stopped."""
    started = time.perf_counter() - run.elapsed
    budget = run.config.rounds * run.config.samples
    if progress is not None:
        progress({"done": run.done(), "budget": budget})

    def save(index: int | None = None) -> None:
        """Checkpoint; ``index``: the sample of the unfinished round whose result just arrived."""
        run.elapsed = time.perf_counter() - started
        if run_dir is not None:
            save_checkpoint(run_dir, run.to_state())
        if progress is not None and index is not None:
            result = run.pending["results"][index]
            best_x, best_value = run.best_so_far()
            progress({"done": run.done(), "budget": budget, "round": run.rounds_done,
                      "x": run.pending["thetas"][index], "value": result["value"], "error": result["error"],
                      "best_x": best_x, "best_value": best_value, "seconds": run.elapsed})

    stopped = "budget"
    while run.rounds_done < run.config.rounds:
        if run.pending is None:  # a round left unfinished by an interruption is completed first
            if max_seconds is not None and time.perf_counter() - started >= max_seconds:
                stopped = "time"
                break
            run.sample_round()
            save()
        _evaluate_round(run, objective, mapper, save)
        run.finish_round()
        save()
        if run_dir is not None:
            _write_results(run_dir, run.result("running"))
    run.elapsed = time.perf_counter() - started
    return stopped


def _evaluate_round(run: _Run, objective, mapper: Backend, save: Callable[..., None]) -> None:
    """Evaluate the round's samples still without a result, ``mapper.workers`` at a time; save after each."""
    pending = run.pending
    queue = [i for i, r in enumerate(pending["results"]) if r is None]
    in_flight: dict = {}  # future -> sample index
    while queue or in_flight:
        while queue and len(in_flight) < mapper.workers:
            index = queue.pop(0)
            in_flight[mapper.submit(evaluate, objective, list(pending["thetas"][index]))] = index
        done, _ = mapper.wait_first(in_flight)
        for future in sorted(done, key=lambda f: in_flight[f]):  # not the order of a set
            index = in_flight.pop(future)
            try:
                value, error = future.result()
            except Exception as err:  # the worker itself failed (e.g. it died): a failed sample all the same
                value, error = None, f"{type(err).__name__}: {err}"
            pending["results"][index] = {"value": value, "error": error}
            save(index)
