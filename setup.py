"""Installs the repository's three library folders as one import name, ``stn_tf``.

``stn_tf/`` is the package; ``pipelines/`` and ``export/`` stay at the top of the
repository (the project's layout) and install as ``stn_tf.pipelines`` and
``stn_tf.export``. Every package under each folder is found by discovery, so a new
subpackage cannot be left out. The metadata is in ``pyproject.toml``.
"""

from setuptools import find_namespace_packages, setup

# Installed name -> the repository folder that holds it.
ROOTS = {"stn_tf": "stn_tf", "stn_tf.pipelines": "pipelines", "stn_tf.export": "export"}


def _packages() -> list[str]:
    # Namespace discovery also lists data folders (pipelines/data/mnist), which
    # setuptools wants named as packages for their files to install.
    found = []
    for name, folder in ROOTS.items():
        subs = find_namespace_packages(folder, exclude=["*__pycache__*"])
        found += [name, *(f"{name}.{sub}" for sub in subs)]
    return sorted(set(found))


setup(packages=_packages(), package_dir=ROOTS)
