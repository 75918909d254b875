"""The embedded demo archive: a seeded generator of real COGs and STAC items."""

from pipeline.demo.archive import DEMO_SITE, generate_archive

__all__ = ["DEMO_SITE", "generate_archive"]
