"""The sampler a spec names: the decision of what to propose next (Optuna's samplers, or
hwsearch's cost-aware one), configured from the spec's search settings."""

from __future__ import annotations

import optuna


def make_sampler(spec) -> optuna.samplers.BaseSampler:
    """The sampler the spec's ``search.sampler`` names, seeded with ``search.seed``."""
    kind, seed, n_trials = spec.search.sampler, spec.search.seed, spec.search.trials
    if kind == "tpe":
        # Multivariate TPE over the groups of parameters that occur together (the space is
        # conditional): one density per group and trial rather than one per parameter, which
        # models their interactions and samples several times faster. Constant liar: trials
        # running in parallel are not proposed twice.
        import warnings

        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning,
                                message=".*group.*")
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True, multivariate=True, group=True,
                                          n_startup_trials=min(10, max(4, n_trials // 4)))
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(8, min(50, n_trials // 4)))
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "gp":
        # Gaussian-process Bayesian optimisation: multi-objective (log expected hypervolume
        # improvement) and aware of the budget's constraints (``trial.set_constraint``). Parameters
        # outside the space's always-present part (conditional ones) are sampled at random.
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=min(10, max(4, n_trials // 4)),
                                         warn_independent_sampling=False)
    if kind == "cost-aware":
        # Prices candidates before proposing them and models accuracy alone (._cost_aware);
        # the runner attaches the target's prices. A shorter start-up than the others': its
        # start-up candidates are a maximin design over feasible ones, not random draws.
        from hwsearch.search.algorithms._cost_aware import CostAwareSampler

        return CostAwareSampler(spec.space, spec.objectives, spec.budget.limits(), seed=seed,
                                n_startup=min(8, max(3, n_trials // 10)))
    raise ValueError(f"unknown sampler {kind!r}")
