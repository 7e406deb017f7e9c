"""Training: configuration, the loop (single process or torchrun/DDP), selection, resume."""
from .config import resolve_config
from .engine import train

__all__ = ["resolve_config", "train"]
