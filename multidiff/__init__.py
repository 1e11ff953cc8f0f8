"""multidiff: diffusion models for raw audio, 3D point clouds and 3D molecules on one core."""

from . import env  # noqa: F401  (first: sets the environment before anything loads torch)
