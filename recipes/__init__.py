"""babysit.recipes: running a training recipe, from data to report."""
