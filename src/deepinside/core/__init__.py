"""Infrastructure: the classifier and its preprocessing, data, crop geometry, input checks, layers and hooks, sharded runs."""
