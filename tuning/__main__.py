"""``python -m tuning``: the same command as ``python -m tuning.search``."""

from tuning.cli import main

if __name__ == "__main__":
    main()
