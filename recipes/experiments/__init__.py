"""The lectures' claims as runnable experiments: ``python -m recipes.experiments.NAME``."""
