"""``python -m benchmarks.posteriordb``: see :mod:`benchmarks.posteriordb.bench`."""

from .bench import main

if __name__ == "__main__":
    main()
