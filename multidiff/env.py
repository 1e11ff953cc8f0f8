"""Process environment that must be set before torch loads (imported first by ``multidiff`` itself and by
the entry points, so it is written once)."""

import os

# idle OpenMP workers sleep instead of spinning: spinning threads stall every parallel op when another
# process holds a core (10-20x slower on a shared small CPU); read by the OpenMP runtime when torch loads
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
