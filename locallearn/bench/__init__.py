"""Speed: the training paths of one recipe, and the whole grid's measured cost."""
