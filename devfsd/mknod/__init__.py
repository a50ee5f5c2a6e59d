"""devfs-mknod: NetBSD mknod(8) for devfsd mounts.

``args`` parses the command line without I/O (with ``pack`` for ``-F``
formats and ``mode`` for ``-m``); ``cli`` looks names up, makes the node
and is the ``devfs-mknod`` console script (``devfsd.mknod.cli:main``).
Nothing is imported here, so importing ``devfsd.mknod.args`` stays pure.
"""
