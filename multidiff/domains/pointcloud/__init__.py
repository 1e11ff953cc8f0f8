"""Point clouds: PointFlow-layout ShapeNet, ModelNet10/40 and folders of .npy/.xyz/.ply/.pcd files."""

from .data import FolderDataModule, ModelNetDataModule, PointCloudDataModule, ShapeNetDataModule
from .domain import PointCloudDomain
from .net import PointRINDenoiser

__all__ = [
    "FolderDataModule",
    "ModelNetDataModule",
    "PointCloudDataModule",
    "PointCloudDomain",
    "PointRINDenoiser",
    "ShapeNetDataModule",
]
