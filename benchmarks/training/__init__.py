"""One pretraining loop for every method."""
