"""Data: reading and checking files, fetching them, batches and augmentation, the class sampler."""
