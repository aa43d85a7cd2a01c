"""The one training loop over a stream of tasks, its hooks, checkpoints and logging."""
