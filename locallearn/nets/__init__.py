"""Networks by name: the mlp, the VGGs and the CIFAR ResNets cut into local modules."""
