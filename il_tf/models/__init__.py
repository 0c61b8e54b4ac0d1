"""Per-learner heads and networks built from genotypes."""
