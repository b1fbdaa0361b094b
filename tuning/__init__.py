"""babysit.tuning: random search in log space, coarse to fine (KerasTuner).

``tuning.search(config, space, trials, epochs, workdir)`` (the module ``tuning.search``
is callable: calling it calls ``tuning.search.search``),
``tuning.coarse_to_fine(config, space, stages, keep_top, workdir)``,
``tuning.search_step(config, splits=..., workdir=...)`` and the distributions of
``tuning.space``; the command line is ``python -m tuning.search`` (docs/search.md).
"""

import warnings

import recipes  # noqa: F401 -- first: imports TensorFlow quietly (see recipes/__init__.py)

# ``python -m tuning.search`` imports this package, which imports tuning.search, before
# runpy runs the module as __main__; its __main__ block calls the package's copy, so the
# "found in sys.modules" warning runpy prints is harmless here.
warnings.filterwarnings("ignore", message=r"'tuning\.search' found in sys\.modules",
                        category=RuntimeWarning)

from tuning import search, space  # noqa: E402  (tuning.search: the module, callable)
from tuning.search import (  # noqa: E402
    Note,
    SearchResult,
    Stage,
    coarse_to_fine,
    narrow,
    search_step,
)

__all__ = ["space", "search", "coarse_to_fine", "search_step", "narrow", "Stage", "Note",
           "SearchResult"]
