"""nml-gradiff: a NeuroML/LEMS compiler to NEURON, JAX and LEMS with forward sensitivities."""

__version__ = "0.1.0"
