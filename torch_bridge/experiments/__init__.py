"""The paper's experiments on real data: the sanity test (rotation penalties, section 3.3),
model stitching (section 4) and the similarity sweep (section 5), with data loading, a
model zoo and training as in appendix D.

>>> from torch_bridge.experiments import make_config, run_experiment   # doctest: +SKIP
>>> results = run_experiment(make_config("stitch", preset="smoke", out="out"))  # doctest: +SKIP
"""

from ._config import PRESETS, ExperimentConfig, make_config, mean_ci, write_results
from ._data import Dataset, augment, default_cache_dir, load_dataset
from ._plots import plot_results
from ._run import run_experiment
from ._sanity import random_orthogonal, random_transform, run_sanity
from ._sites import Site, find_sites
from ._stitch import Stitch, StitchConstraint, run_stitch, sinkhorn, stitch_constraint
from ._sweep import run_similarity, site_features
from ._train import TrainConfig, evaluate, resolve_device, train_model
from ._zoo import ModelSpec, build_model, get_model

__all__ = [
    "ExperimentConfig", "PRESETS", "make_config", "run_experiment", "write_results", "mean_ci", "plot_results",
    "Dataset", "load_dataset", "augment", "default_cache_dir",
    "TrainConfig", "train_model", "evaluate", "resolve_device", "ModelSpec", "build_model", "get_model",
    "Site", "find_sites",
    "run_sanity", "random_orthogonal", "random_transform",
    "run_stitch", "Stitch", "StitchConstraint", "stitch_constraint", "sinkhorn",
    "run_similarity", "site_features",
]
