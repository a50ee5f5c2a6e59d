"""Test support for drivers: an in-process kernel and (later) real mounts."""
