"""A run: experiment setup, train state, optimizer."""
