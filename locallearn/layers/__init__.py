"""The blocks every network is made of: LocalNet's blocks, the paper's local losses, residual blocks."""
