"""Seeds for independent random streams (dropout masks, batch order, augmentation,
the class sampler): one function of where a stream is used, so a resumed run draws
exactly the numbers an uninterrupted one would."""
from __future__ import annotations

import numpy as np


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, epoch, stream...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)
