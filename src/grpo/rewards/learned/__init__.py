"""The learned reward model (reward=model): an ORM or a PRM, its training data, network and training loop."""
