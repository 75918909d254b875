"""Video compression of EO cubes (libx265 12-bit 4:4:4 with optional KLT; lossless ffv1) in Zarr v3."""

from pipeline.compression.codec import CodecParams, decode_array, encode_array

__all__ = ["CodecParams", "compress_cube", "decode_array", "encode_array", "open_compressed"]


def __getattr__(name: str):
    # the store-level stage is imported on first use: zarr loads this package through its codec
    # entry point, and the stage itself imports zarr
    if name in ("compress_cube", "open_compressed"):
        from pipeline.compression import stage

        return getattr(stage, name)
    raise AttributeError(f"module 'pipeline.compression' has no attribute {name!r}")
