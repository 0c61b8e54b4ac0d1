"""Search spaces: candidate operations, supernets and genotypes."""
