"""Preference alignment on TRL, Hydra, DeepSpeed and W&B.

Subpackages: ``rlhf.data`` (folder ``data/``) and ``rlhf.reward`` (folder ``reward/``).
"""

__version__ = "0.1.0"
