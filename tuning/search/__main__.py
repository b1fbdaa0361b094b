"""``python -m tuning.search``: the search's command line (:mod:`tuning.cli`, docs/search.md).

``tuning.search`` is a package only so that this file, not the procedure module, runs as
``__main__``: the procedure is imported once (``tuning`` imports it) and never re-run.
"""

from tuning.cli import main

if __name__ == "__main__":
    main()
