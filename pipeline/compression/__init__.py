"""Video compression of EO cubes (libx265 12-bit 4:4:4 with optional KLT; lossless ffv1) in Zarr v3."""
from pipeline.compression.codec import CodecParams, decode_array, encode_array

__all__ = ["CodecParams", "decode_array", "encode_array"]
