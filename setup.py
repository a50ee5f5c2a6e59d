"""What pyproject.toml cannot say: the built-in drivers and the man pages in the wheel.

The drivers live in the top-level ``modules/`` of the source tree and are
installed as ``devfsd/modules/`` (the loader looks there: devfsd.kern.modpath);
the man pages go to ``PREFIX/share/man/manN``, where ``man`` finds them.
"""

from pathlib import Path

from setuptools import find_packages, setup

MAN = Path("man")
drivers = [f"devfsd.modules.{p}" for p in find_packages("modules")]
setup(
    packages=[*find_packages(include=["devfsd", "devfsd.*"]), "devfsd.modules", *drivers],
    package_dir={"devfsd.modules": "modules"},
    data_files=[
        (f"share/man/man{s}", sorted(str(p) for p in MAN.glob(f"*.{s}")))
        for s in "123456789"
        if any(MAN.glob(f"*.{s}"))
    ],
)
