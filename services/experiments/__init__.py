"""Live experiments: who sees which variant, and what the variants did."""
