"""babysit.tuning: random search in log space, coarse to fine (KerasTuner)."""
