"""The flow: band paths, the loss, solvers, steering, scale-adaptive compute."""
