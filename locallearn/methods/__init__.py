"""Local-learning methods, each the head it puts on a local module: one file per
method, one entry in METHODS (methods/registry.py; docs/methods.md, Adding a method).

  paper     the paper's pred / sim / predsim (--loss-sup, --beta; layers/local_losses.py)
  dgl       DGL's auxiliary classifier
  infopro   InfoPro's image reconstruction plus classifier, lambda schedule over modules
  auglocal  AugLocal's auxiliary networks of sampled subsequent layers, pyramidal depth

A head is an nn.Module called as head(h, x, y, y_onehot, image=...) -> (loss, stats):
h the module's output, x its input, image the network's input; stats may hold
"pred_logits" (the local classifier's logits: its error is recorded per module).
"""
