"""Positional queries on the catalogue: cone search over the indexed ra/dec columns."""

from __future__ import annotations

import math

from django.db.models import F, FloatField, Q, QuerySet, Value
from django.db.models.functions import ASin, Cos, Degrees, Power, Radians, Sin, Sqrt

#: Widening of the bounding box, in degrees: the exact test decides, the box must never cut.
_BOX_MARGIN_DEG = 1e-6

#: Limits of a cone search's parameters (checked by the callers' input validation).
RA_RANGE = (0.0, 360.0)
DEC_RANGE = (-90.0, 90.0)
MAX_RADIUS_ARCSEC = 10 * 3600.0


def _ra_window(ra_deg: float, half_width_deg: float) -> Q:
    """RA within ``half_width_deg`` of ``ra_deg``, split in two where it crosses 0/360."""
    low, high = ra_deg - half_width_deg, ra_deg + half_width_deg
    if low < 0:
        return Q(ra_deg__gte=low + 360) | Q(ra_deg__lte=high)
    if high >= 360:
        return Q(ra_deg__gte=low) | Q(ra_deg__lte=high - 360)
    return Q(ra_deg__gte=low, ra_deg__lte=high)


def bounding_box(ra_deg: float, dec_deg: float, radius_deg: float) -> Q:
    """A condition on the indexed ``ra_deg``/``dec_deg`` that every source in the cone meets.

    The RA half-width of a cone is asin(sin r / cos dec) (the tangent points), not r / cos dec;
    a cone that reaches a pole spans every RA.
    """
    margin = radius_deg + _BOX_MARGIN_DEG
    box = Q(dec_deg__gte=max(-90.0, dec_deg - margin), dec_deg__lte=min(90.0, dec_deg + margin))
    if abs(dec_deg) + margin >= 90.0:
        return box
    ratio = math.sin(math.radians(margin)) / math.cos(math.radians(dec_deg))
    if ratio >= 1.0:
        return box
    return box & _ra_window(ra_deg, math.degrees(math.asin(ratio)) + _BOX_MARGIN_DEG)


def within_cone(sources: QuerySet, ra_deg: float, dec_deg: float, radius_arcsec: float) -> QuerySet:
    """Sources of ``sources`` within ``radius_arcsec`` of (ra, dec), nearest first.

    A bounding box on the indexed columns narrows the rows; the haversine formula, evaluated in
    the database, then keeps exactly those within the radius (and handles RA wrap-around, since
    sin^2(dRA/2) is periodic in 360 degrees). Each row gets ``distance_arcsec``.

    Expects validated input: ra in [0, 360), dec in [-90, 90], 0 < radius <= MAX_RADIUS_ARCSEC.
    """
    radius_deg = radius_arcsec / 3600.0
    ra0, dec0 = math.radians(ra_deg), math.radians(dec_deg)
    half_dec = (Radians(F("dec_deg")) - Value(dec0)) / Value(2.0)
    half_ra = (Radians(F("ra_deg")) - Value(ra0)) / Value(2.0)
    haversine = Power(Sin(half_dec), 2) + Value(math.cos(dec0)) * Cos(Radians(F("dec_deg"))) * Power(Sin(half_ra), 2)
    limit = math.sin(math.radians(radius_deg) / 2) ** 2
    return (
        sources.filter(bounding_box(ra_deg, dec_deg, radius_deg))
        .alias(haversine=haversine)
        .filter(haversine__lte=limit)
        .annotate(distance_arcsec=Degrees(Value(2.0) * ASin(Sqrt(F("haversine"))), output_field=FloatField()) * 3600)
        .order_by("distance_arcsec", "pk")
    )
