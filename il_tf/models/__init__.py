"""Networks built from genotypes (the evaluation networks) and their complexity."""
