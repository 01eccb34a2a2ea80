"""gantry.images: content store, layers, overlay snapshots, formats, commit and registry.

The engine uses :class:`gantry.images.service.ImageService`; see docs/images.md.
"""
