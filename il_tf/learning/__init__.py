"""Interleaving schedules, hypergradient methods and the search loop."""
