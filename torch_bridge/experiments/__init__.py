"""The paper's experiments on real data: the sanity test (rotation penalties, section 3.3),
model stitching (section 4) and the similarity sweep (section 5), with data loading, a
model zoo and training as in appendix D.

Every experiment is split into jobs (train one model, stitch one pair at one layer with one
method, one sanity repeat at one layer with one transform, the similarity of one pair) that
run in this process or as submitit jobs (``ExecutorConfig("local", workers=2)`` or
``"slurm"``), each writing its result to ``OUT/jobs``; a merge step assembles the results.

>>> from torch_bridge.experiments import make_config, run_experiment   # doctest: +SKIP
>>> results = run_experiment(make_config("stitch", preset="smoke", out="out"))  # doctest: +SKIP
>>> results = run_experiment(cfg, executor=ExecutorConfig("local", workers=2))  # doctest: +SKIP
"""

from ._config import PRESETS, ExperimentConfig, make_config, mean_ci, write_results
from ._data import CacheWarning, Dataset, augment, default_cache_dir, load_dataset
from ._jobs import Job, Plan, status
from ._plots import plot_results
from ._registry import ExperimentKind
from ._run import ExecutorConfig, JobsUnfinished, merge_results, plan_experiment, run_experiment
from ._sanity import random_orthogonal, random_transform, run_sanity
from ._sites import Site, find_sites
from ._stitch import Stitch, StitchConstraint, run_stitch, sinkhorn, stitch_constraint
from ._sweep import layer_features, run_similarity, site_features
from ._train import TrainConfig, evaluate, resolve_device, train_model
from ._zoo import ModelSpec, build_model, get_model

__all__ = [
    "ExperimentConfig", "PRESETS", "make_config", "run_experiment", "write_results", "mean_ci", "plot_results",
    "ExecutorConfig", "JobsUnfinished", "plan_experiment", "merge_results", "status", "Job", "Plan", "ExperimentKind",
    "Dataset", "load_dataset", "augment", "default_cache_dir", "CacheWarning",
    "TrainConfig", "train_model", "evaluate", "resolve_device", "ModelSpec", "build_model", "get_model",
    "Site", "find_sites",
    "run_sanity", "random_orthogonal", "random_transform",
    "run_stitch", "Stitch", "StitchConstraint", "stitch_constraint", "sinkhorn",
    "run_similarity", "site_features", "layer_features",
]
