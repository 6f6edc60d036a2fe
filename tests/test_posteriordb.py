"""Each posteriordb translation has Stan's unconstrained log density.

At reference draws, the Pyro model's ``log p(x, z) + log |det J|`` must equal
Stan's log density (written independently in NumPy/SciPy) up to one constant.
"""

import numpy as np
import pytest
import torch

from benchmarks.posteriordb import SHORT_NAMES, load
from benchmarks.posteriordb.logdensity import pyro_log_density


@pytest.mark.parametrize("short", SHORT_NAMES)
def test_log_density_matches_stan(short):
    with torch.random.fork_rng():
        torch.set_default_dtype(torch.float64)
        try:
            post = load(short)
            draws = np.linspace(0, len(next(iter(post.reference.values()))) - 1, 5)
            diffs = []
            for i in draws.round().astype(int):
                values = {k: v[i] for k, v in post.reference.items()}
                ours = pyro_log_density(post.model, post.data, values)
                stan = post.stan_log_density(values, post.numpy_data)
                diffs.append(ours - stan)
        finally:
            torch.set_default_dtype(torch.float32)
    spread = max(diffs) - min(diffs)
    assert spread < 1e-6 * max(1.0, abs(diffs[0])), (short, diffs)
