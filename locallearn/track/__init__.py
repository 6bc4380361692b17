"""MLflow: the store (reaching it, retries, artifacts) and run logging."""
