"""backends neuron stage."""
