"""Self-supervised training of the adapter: responses, teacher targets, optimisation."""
