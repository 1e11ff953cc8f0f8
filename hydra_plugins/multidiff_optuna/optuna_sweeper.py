"""``hydra/sweeper=optuna``: Optuna's ask-and-tell loop over Hydra's launcher.

The search space is written in Hydra's override grammar, in ``hydra.sweeper.params`` or on the command line
(which wins): ``choice(a, b)`` and ``range(1, 5)`` are categorical, ``interval(lo, hi)`` is uniform over the
reals (as Hydra reads it), ``tag(log, interval(lo, hi))`` log-uniform; a plain value is fixed for every trial.
Each batch of ``n_jobs`` trials is asked of the study, launched together, and told the values the jobs return
(the task function's return value: one number, or a sequence for several ``direction``s); a job that fails is
told as failed. ``optimization_results.yaml`` in the sweep folder holds the best parameters and value (for
several objectives, the Pareto front). The configuration keys are those of Hydra's own Optuna plugin, which
pins an Optuna older than 3.
"""

# (no `from __future__ import annotations`: Hydra loads plugins outside sys.modules, where dataclasses cannot
# resolve string annotations)
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

log = logging.getLogger(__name__)


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.multidiff_optuna.optuna_sweeper.OptunaSweeper"
    sampler: Any = None  # an Optuna sampler config (``_target_: optuna.samplers.TPESampler``, ...); None: TPE
    direction: Any = "minimize"  # minimize | maximize, or a list of them for several objectives
    storage: str | None = None  # e.g. sqlite:///study.db: a study that resumes or is shared
    study_name: str | None = None
    n_trials: int = 20
    n_jobs: int = 1  # trials launched at once
    params: dict[str, str] = field(default_factory=dict)


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="multidiff")


def distribution(override: Override) -> BaseDistribution:
    """An Optuna distribution for a sweep override (see the module's docstring)."""
    value = override.value()
    if isinstance(value, IntervalSweep):
        return FloatDistribution(float(value.start), float(value.end), log="log" in value.tags)
    # choice and range sweeps: their values, encoded as they would be written on the command line
    return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))


def search_space(params: dict[str, str], arguments: Sequence[str]) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The distributions to search and the fixed overrides, from the config's params then the command line."""
    parser = OverridesParser.create()
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in parser.parse_overrides([f"{k}={v}" for k, v in params.items()]) + parser.parse_overrides(
        list(arguments)
    ):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = override.input_line
    return space, list(fixed.values())


class OptunaSweeper(Sweeper):
    def __init__(
        self,
        sampler: Any,
        direction: Any,
        storage: str | None,
        study_name: str | None,
        n_trials: int,
        n_jobs: int,
        params: dict[str, str] | None,
    ):
        if n_trials < 1 or n_jobs < 1:
            raise ValueError(f"hydra.sweeper: n_trials ({n_trials}) and n_jobs ({n_jobs}) must be positive")
        directions = [direction] if isinstance(direction, str) else list(direction)
        bad = [d for d in directions if d not in ("minimize", "maximize")]
        if bad:
            raise ValueError(f"hydra.sweeper.direction: {bad}; valid: minimize, maximize (or a list of them)")
        self.sampler, self.directions, self.storage, self.study_name = sampler, directions, storage, study_name
        self.n_trials, self.n_jobs, self.params = n_trials, n_jobs, dict(params or {})

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(config.hydra.sweep.dir)

    def sweep(self, arguments: list[str]) -> None:
        space, fixed = search_space(self.params, arguments)
        # Hydra instantiates the sweeper's config recursively: the sampler may come built already
        sampler = instantiate(self.sampler) if isinstance(self.sampler, dict | DictConfig) else self.sampler
        study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=sampler,
            directions=self.directions,
            load_if_exists=True,
        )
        log.info("Optuna study %s over %s; fixed: %s", study.study_name, ", ".join(space) or "nothing", fixed)
        done = 0
        while done < self.n_trials:
            trials = [study.ask(space) for _ in range(min(self.n_jobs, self.n_trials - done))]
            jobs = [[*fixed, *(f"{k}={v}" for k, v in t.params.items())] for t in trials]
            results = self.launcher.launch(jobs, initial_job_idx=done)
            for trial, result in zip(trials, results):
                if result.status != JobStatus.COMPLETED or result.return_value is None:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                    log.warning("trial %d failed: %s", trial.number, result._return_value)
                    continue
                value = result.return_value
                study.tell(trial, list(value) if len(self.directions) > 1 else float(value))
            done += len(trials)
        self._write_results(study)

    def _write_results(self, study: optuna.Study) -> None:
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            raise RuntimeError(f"every trial of study {study.study_name} failed: see the jobs' logs")
        if len(self.directions) == 1:
            result = {"name": "optuna", "best_params": study.best_params, "best_value": study.best_value}
        else:
            front = [{"params": t.params, "values": t.values} for t in study.best_trials]
            result = {"name": "optuna", "solutions": front}
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(result), self.sweep_dir / "optimization_results.yaml")
        log.info("best: %s", result)
