"""Write ``data/<short>.json.gz`` from a local git copy of posteriordb.

Not run at benchmark time (nothing is fetched then); run once when a posterior
is added::

    python -m benchmarks.posteriordb.extract /path/to/posteriordb.git kidiq

It reads the posterior's data and reference draws (10 chains x 1,000 draws),
keeps the Stan parameters the model module lists in ``PARAMS``, reshapes
``name[i,j]`` columns into arrays shaped ``(draws, *shape)``, and thins the
draws to ``THIN_TO`` evenly spaced ones over all chains.
"""

from __future__ import annotations

import gzip
import importlib
import io
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

THIN_TO = 1000
_ROOT = "posterior_database"
_INDEX = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)(\[(?P<idx>[0-9,]+)\])?$")


def _git_show(git_dir: str, path: str) -> bytes:
    return subprocess.run(
        ["git", f"--git-dir={git_dir}", "show", f"HEAD:{path}"],
        check=True,
        capture_output=True,
    ).stdout


def _git_zip_json(git_dir: str, path: str) -> object:
    with zipfile.ZipFile(io.BytesIO(_git_show(git_dir, path))) as archive:
        (member,) = archive.namelist()
        return json.loads(archive.read(member))


def _git_json(git_dir: str, path: str) -> object:
    return json.loads(_git_show(git_dir, path))


def reshape_draws(chains: list[dict], params: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Stack the chains' ``name[i,j]`` columns into ``(draws, *shape)`` arrays."""
    columns: dict[str, dict[tuple[int, ...], np.ndarray]] = {p: {} for p in params}
    for column in chains[0]:
        match = _INDEX.match(column)
        if match is None or match["name"] not in columns:
            continue
        idx = tuple(int(i) - 1 for i in match["idx"].split(",")) if match["idx"] else ()
        columns[match["name"]][idx] = np.concatenate(
            [np.asarray(chain[column], dtype=float) for chain in chains]
        )
    out = {}
    for name, cells in columns.items():
        if not cells:
            raise KeyError(f"the reference draws have no column for {name!r}")
        shape = tuple(
            max(i[d] for i in cells) + 1 for d in range(len(next(iter(cells))))
        )
        draws = len(next(iter(cells.values())))
        array = np.empty((draws, *shape))
        for idx, values in cells.items():
            array[(slice(None), *idx)] = values
        out[name] = array
    return out


def extract(git_dir: str, short: str) -> Path:
    """Write the data file of one posterior; return its path."""
    module = importlib.import_module(f"benchmarks.posteriordb.models.{short}")
    info = _git_json(git_dir, f"{_ROOT}/posteriors/{module.POSTERIOR}.json")
    data = _git_zip_json(git_dir, f"{_ROOT}/data/data/{info['data_name']}.json.zip")
    chains = _git_zip_json(
        git_dir,
        f"{_ROOT}/reference_posteriors/draws/draws/"
        f"{info['reference_posterior_name']}.json.zip",
    )
    reference = reshape_draws(chains, tuple(module.PARAMS))
    total = len(next(iter(reference.values())))
    keep = np.linspace(0, total - 1, min(THIN_TO, total)).round().astype(int)
    stored = {
        "posterior": module.POSTERIOR,
        "data": data,
        "reference": {k: v[keep].tolist() for k, v in reference.items()},
    }
    path = Path(__file__).parent / "data" / f"{short}.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(stored, f)
    return path


if __name__ == "__main__":
    for name in sys.argv[2:]:
        print(extract(sys.argv[1], name))
