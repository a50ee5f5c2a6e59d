"""``python -m devfsd``: the daemon."""

from devfsd.daemon import main

raise SystemExit(main())
