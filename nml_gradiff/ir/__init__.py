"""The intermediate representation: plain dataclasses and sympy expressions."""
