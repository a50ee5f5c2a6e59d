"""devfsd: a userland /dev with NetBSD-style loadable character-device drivers."""

__version__ = "0.1.0"
