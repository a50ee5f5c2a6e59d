"""Isolated modules: a module's code in a process of its own (``modload -I``).

``protocol`` is the pure message format; ``host`` runs in the module's
process; ``hostproc``, ``proxy`` and ``supervisor`` are the daemon's side.
See docs/isolation.md and devfsd-module(9), ISOLATION.
"""
