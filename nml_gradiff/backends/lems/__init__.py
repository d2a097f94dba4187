"""backends lems stage."""
