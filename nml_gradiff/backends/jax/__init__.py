"""backends jax stage."""
