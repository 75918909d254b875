"""The output grid of a request: an odc-geo GeoBox snapped to the pixel size."""

from __future__ import annotations

from odc.geo import geom
from odc.geo.geobox import GeoBox

from pipeline.model import CubeRequest, RequestError


def utm_crs_for(lon: float, lat: float) -> str:
    """The WGS 84 / UTM zone CRS containing a point (EPSG:326xx north, 327xx south)."""
    zone = min(int((lon + 180) // 6) + 1, 60)
    return f"EPSG:{(32600 if lat >= 0 else 32700) + zone}"


def check_projected(crs: str) -> None:
    """Raise :class:`RequestError` unless ``crs`` is projected: cubes are ``(y, x)`` grids in metres."""
    from pyproj import CRS

    parsed = CRS.from_user_input(crs)
    if not parsed.is_projected:
        kind = "geographic (degrees)" if parsed.is_geographic else "not a projected CRS"
        raise RequestError(
            f"crs {crs!r} is {kind}; cubes are grids in a projected CRS in metres: give one such as "
            "EPSG:32632, or leave crs out for the UTM zone of the area"
        )


def request_geobox(request: CubeRequest) -> GeoBox:
    """GeoBox of the request: its area in the requested (or UTM) CRS at ``resolution``.

    Pixel edges fall on integer multiples of the resolution, so two requests with the
    same CRS and resolution share a grid and their stores can be combined.
    """
    if request.geometry is not None:
        area = geom.Geometry(request.geometry, crs="EPSG:4326")
    else:
        area = geom.box(*request.area_bbox(), crs="EPSG:4326")
    centre = area.centroid.points[0]
    crs = request.crs or utm_crs_for(*centre)
    check_projected(crs)
    try:
        projected = area.to_crs(crs)
    except Exception as exc:  # pyproj raises a variety of errors for bad CRS strings
        raise RequestError(f"cannot project the area to CRS {crs!r}: {exc}") from exc
    try:
        gbox = GeoBox.from_geopolygon(projected, resolution=request.resolution, crs=crs)
    except (OverflowError, ValueError, ZeroDivisionError) as exc:
        raise RequestError(f"resolution {request.resolution} gives no grid over the area: {exc}") from None
    if min(gbox.shape.x, gbox.shape.y) < 2:
        raise RequestError(
            f"grid of {gbox.shape.y} x {gbox.shape.x} px at resolution {request.resolution} is smaller than "
            "2 x 2 pixels; use a finer resolution or a larger area"
        )
    if gbox.shape.x * gbox.shape.y > 400_000_000:
        raise RequestError(
            f"grid of {gbox.shape.y} x {gbox.shape.x} px is too large; coarsen the resolution or split the AOI"
        )
    return gbox
