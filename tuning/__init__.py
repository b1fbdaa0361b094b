"""babysit.tuning: random search in log space, coarse to fine (KerasTuner).

``tuning.search(config, space, trials, epochs, workdir)`` (the module ``tuning.search``
is callable: calling it calls ``tuning.search.search``),
``tuning.coarse_to_fine(config, space, stages, keep_top, workdir)``,
``tuning.search_step(config, splits=..., workdir=...)``, the pure ``tuning.narrow`` and the
distributions of ``tuning.space``; the command line is ``python -m tuning.search``
(``tuning.cli``; docs/search.md).
"""

import recipes  # noqa: F401 -- first: imports TensorFlow quietly (see recipes/__init__.py)
from tuning import search, space
from tuning.narrowing import Note, Stage, narrow
from tuning.results import SearchResult
from tuning.search import coarse_to_fine, search_step

__all__ = ["space", "search", "coarse_to_fine", "search_step", "narrow", "Stage", "Note",
           "SearchResult"]
