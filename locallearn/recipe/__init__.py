"""What is trained, torch-free: the flags and their checks, the dataset table, grid rows,
the architecture walk, the cost model and the grid's cost. Imports only the foundation."""
