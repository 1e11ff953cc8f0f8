from .domain import AudioDomain

__all__ = ["AudioDomain"]
