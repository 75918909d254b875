"""eocube: an Earth-observation data-cube pipeline.

request -> search -> cube -> embed -> uncertainty -> compress -> store.
"""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("eocube")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0+src"
