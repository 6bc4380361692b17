"""One run: the trainer, the run loop (fit), the update rules (engines), epochs, pipeline stages."""
