"""Read one radio image from a FITS file, coping with real-world headers.

Real headers are messy: the SkyView FIRST cutouts carry COMMENT cards with tab characters,
which astropy reports as ``VerifyWarning``. Such problems are recorded in
:attr:`FitsImage.warnings` and reading goes on; only a file that cannot give a 2-D image
raises :class:`FitsReadError`.
"""

from __future__ import annotations

import gzip
import math
import re
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from ml.preprocess import PreprocessError, squeeze_to_2d

#: Commentary keywords carry free text only; dropping them before building the WCS makes
#: it ~5x faster (0.6 ms instead of 3 ms per SkyView header) and changes nothing else.
_COMMENTARY_KEYWORDS = frozenset({"COMMENT", "HISTORY", ""})
#: Lines astropy's verify() prints around the real messages.
_BOILERPLATE = ("Verification reported errors:", "Note: astropy.io.fits uses zero-based indexing.")
_CARD_PREFIX = re.compile(r"^(HDU|Card) \d+:$")
#: What astropy raises for broken files: truncated data fails to reshape (ValueError),
#: missing SIMPLE or empty files are OSError, broken gzip streams zlib.error / EOFError.
#: MemoryError: a file within the size limits that still does not fit, failed alone.
_READ_ERRORS = (
    OSError,
    ValueError,
    EOFError,
    TypeError,
    IndexError,
    KeyError,
    zlib.error,
    fits.VerifyError,
    MemoryError,
)
#: Largest image read by default: 10000 x 10000 pixels (400 MB as float32). A header may
#: declare any size; this is checked before any pixel is read or decompressed.
DEFAULT_MAX_PIXELS = 100_000_000
#: Decompressed bytes a gzip file may hold beyond its largest allowed image (headers, small
#: extensions): a stream that expands further is cut off, whatever its headers say.
_GZIP_ALLOWANCE_BYTES = 16 * 2**20
_GZIP_MAGIC = b"\x1f\x8b"


class FitsReadError(ValueError):
    """A FITS file cannot give one 2-D image; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{Path(path).name}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass
class FitsImage:
    """One 2-D image and what its header says about it.

    Attributes:
        path: the file read.
        data: float32 2-D image in the file's units (degenerate axes removed).
        ra_deg: right ascension of the image centre (degrees, ICRS/FK5 as in the header),
            ``None`` without a celestial WCS.
        dec_deg: declination of the image centre (degrees), ``None`` without a WCS.
        pixel_scale_arcsec: mean of the two celestial pixel scales, ``None`` if unknown.
        unit: BUNIT, e.g. ``"JY/BEAM"``, ``None`` if absent.
        hdu_index: index of the HDU that held the image.
        warnings: header problems met while reading, one readable string each.
    """

    path: str
    data: np.ndarray
    ra_deg: float | None
    dec_deg: float | None
    pixel_scale_arcsec: float | None
    unit: str | None
    hdu_index: int
    warnings: list[str] = field(default_factory=list)


def read_fits(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> FitsImage:
    """Read the first image HDU of a ``.fits``, ``.fit``, ``.fits.gz`` or ``.fits.fz`` file.

    The declared size of each image HDU is checked before any pixel is read, and a gzip
    stream is cut off once it expands past what the largest allowed image needs, so a small
    hostile file (a header declaring 100000 x 100000 pixels, a gzip bomb) fails alone and
    fast instead of exhausting memory. An uncompressed file is memory-mapped and copied once
    into native float32; the file is closed before returning, so reading thousands of files
    does not accumulate open handles or mapped memory.

    Args:
        path: the FITS file.
        max_pixels: largest image accepted (pixels over all axes, degenerate ones included).

    Returns:
        The image, its centre position and pixel scale from the celestial WCS, and any
        header warnings.

    Raises:
        FitsReadError: missing, corrupt or truncated file, not FITS, no image HDU, an image
            over ``max_pixels``, or a cube with more than one plane.
    """
    path = Path(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with _open_fits(path, max_bytes=max_pixels * 8 + _GZIP_ALLOWANCE_BYTES) as (hdul, stream):
                try:
                    hdu_index, hdu = _first_image_hdu(hdul, path, max_pixels)
                except _NoImageHDU:
                    if stream is not None and stream.cut_off:  # the image may lie past the limit
                        raise FitsReadError(path, stream.limit_reason()) from None
                    raise
                full_shape = hdu.data.shape
                data = _native_float32(squeeze_to_2d(hdu.data), in_place=stream is not None)
                header = hdu.header
                del hdu.data  # the only reference to the file's pages: unmapped now, not at garbage collection
                # Records the header problems (as VerifyWarnings) without fixing anything.
                hdu.verify("warn")
        except FitsReadError:
            raise
        except _DecompressionLimit as exc:
            raise FitsReadError(path, str(exc)) from exc
        except PreprocessError as exc:
            raise FitsReadError(path, str(exc)) from exc
        except _READ_ERRORS as exc:
            if isinstance(exc, MemoryError):
                raise FitsReadError(path, "does not fit in memory") from exc
            raise FitsReadError(path, f"corrupt, truncated or not a FITS file ({type(exc).__name__}: {exc})") from exc
        ra_deg, dec_deg, pixel_scale_arcsec = _sky_geometry(header, data.shape, full_shape)
    unit = header.get("BUNIT")
    return FitsImage(
        path=str(path),
        data=data,
        ra_deg=ra_deg,
        dec_deg=dec_deg,
        pixel_scale_arcsec=pixel_scale_arcsec,
        unit=str(unit).strip() if unit is not None else None,
        hdu_index=hdu_index,
        warnings=_readable_warnings(caught),
    )


class _DecompressionLimit(Exception):  # noqa: N818 - not an Error subclass on purpose
    """A gzip stream expanded past its limit.

    Deliberately neither ``ValueError`` nor ``OSError``: astropy takes those, while reading
    the next HDU, for "no more HDUs" and would hide the reason.
    """


class _BoundedGzipFile(gzip.GzipFile):
    """A gzip stream that refuses to expand past ``max_bytes`` (a decompression bomb).

    Seeks are lazy: astropy seeks past each HDU's data as soon as it has read its header,
    and a gzip stream can only get there by decompressing all of it. Deferred to the next
    read, a seek past data that is never read (an image refused for its declared size)
    costs nothing.
    """

    def __init__(self, path: Path, max_bytes: int) -> None:
        super().__init__(filename=str(path), mode="rb")
        self._max_bytes = max_bytes
        self._pending: int | None = None
        #: Set once a seek went past the limit: the stream then reads as ended (astropy's
        #: "no more HDUs"), so the HDUs before it, already read, are still judged on their
        #: declared sizes, and :func:`read_fits` reports the limit if no image was found.
        self.cut_off = False

    def _position(self) -> int:
        # Not GzipFile.tell(), which is seek(0, 1) and would come back here.
        return self._pending if self._pending is not None else int(self._buffer.tell())  # type: ignore[attr-defined]

    def _check(self, offset: int) -> None:
        if offset > self._max_bytes:
            raise _DecompressionLimit(self.limit_reason())

    def limit_reason(self) -> str:
        return f"decompresses to more than {self._max_bytes:,} bytes (the largest allowed image and its headers)"

    def _settle(self) -> bool:
        """Do the deferred seek; False (and ``cut_off``) when it would pass the limit."""
        if self.cut_off:
            return False
        if self._pending is not None:
            target, self._pending = self._pending, None
            if target > self._max_bytes:
                self.cut_off = True
                return False
            super().seek(target)
        return True

    def tell(self) -> int:
        return self._position()

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self._pending = offset
        elif whence == 1:
            self._pending = self._position() + offset
        else:
            raise OSError("seeking from the end of a gzip stream would decompress all of it")
        return self._pending

    def read(self, size: int | None = -1) -> bytes:
        if not self._settle():
            return b""
        if size is not None and size >= 0:
            self._check(self._position() + size)
        data = super().read(-1 if size is None else size)
        self._check(self._position())
        return data

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def,override]
        if not self._settle():
            return 0
        self._check(self._position() + memoryview(buffer).nbytes)
        return super().readinto(buffer)


@contextmanager
def _open_fits(path: Path, *, max_bytes: int) -> Iterator[tuple[fits.HDUList, _BoundedGzipFile | None]]:
    """The HDU list, and the bounded gzip stream under it (``None``: a memory-mapped file)."""
    with path.open("rb") as handle:
        gzipped = handle.read(2) == _GZIP_MAGIC
    if not gzipped:
        with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
            yield hdul, None
        return
    with _BoundedGzipFile(path, max_bytes) as stream, fits.open(stream, memmap=False, lazy_load_hdus=True) as hdul:
        yield hdul, stream


def _declared_shape(header: fits.Header, path: Path) -> tuple[int, ...]:
    naxis = int(header.get("NAXIS", 0))
    shape = tuple(int(header.get(f"NAXIS{axis}", 0)) for axis in range(naxis, 0, -1))
    if any(length < 0 for length in shape):
        raise FitsReadError(path, f"the header declares a negative axis length {list(reversed(shape))}")
    return shape


def _first_image_hdu(
    hdul: fits.HDUList, path: Path, max_pixels: int
) -> tuple[int, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU]:
    for index, hdu in enumerate(hdul):
        if not hdu.is_image or hdu.header.get("NAXIS", 0) <= 0:
            continue
        # Before touching .data: astropy allocates whatever the header declares.
        shape = _declared_shape(hdu.header, path)
        pixels = math.prod(shape)
        if pixels > max_pixels:
            size = " x ".join(str(length) for length in reversed(shape))
            raise FitsReadError(
                path,
                f"HDU {index} declares a {size} image ({pixels:,} pixels): over the limit of {max_pixels:,} pixels",
            )
        if hdu.data is not None and hdu.data.size > 0:
            return index, hdu
    raise _NoImageHDU(path, f"no HDU with image data among {len(hdul)} HDU(s)")


class _NoImageHDU(FitsReadError):
    pass


def _native_float32(plane: np.ndarray, *, in_place: bool) -> np.ndarray:
    """``plane`` as native-endian float32, detached from the file.

    FITS is big-endian: a big-endian float32 array read into memory (not mapped) is
    byte-swapped where it lies instead of copied, which halves the peak for a large image.
    """
    if in_place and plane.dtype == np.dtype(">f4") and plane.flags.writeable and plane.flags.c_contiguous:
        return plane.byteswap(inplace=True).view(np.float32)
    return plane.astype(np.float32)


def _sky_geometry(
    header: fits.Header, plane_shape: tuple[int, ...], full_shape: tuple[int, ...]
) -> tuple[float | None, float | None, float | None]:
    """Centre (RA, Dec) and pixel scale from the celestial WCS, or Nones.

    Problems (no WCS, a malformed one, sky axes that are not the image axes) are
    reported as warnings, which the caller records: a position is useful, not required.
    """
    wcs_header = fits.Header([card for card in header.cards if card.keyword not in _COMMENTARY_KEYWORDS])
    try:
        full_wcs = WCS(wcs_header, naxis=len(full_shape))
        if not full_wcs.has_celestial:
            warnings.warn("no celestial WCS: position and pixel scale unknown", stacklevel=2)
            return None, None, None
        # The sky axes must be the two image axes left after squeezing. WCS axes are
        # 0-based in FITS order, which runs opposite to numpy's axis order.
        image_axes = sorted(len(full_shape) - 1 - axis for axis, length in enumerate(full_shape) if length > 1)
        if sorted((full_wcs.wcs.lng, full_wcs.wcs.lat)) != image_axes:
            warnings.warn("the celestial WCS axes are not the image axes: position unknown", stacklevel=2)
            return None, None, None
        # .celestial builds a second WCS; a plain 2-D sky image already is one.
        celestial = full_wcs if full_wcs.naxis == 2 else full_wcs.celestial
        rows, cols = plane_shape
        # 0-based pixel coordinates: the centre of an n-pixel axis is at (n - 1) / 2.
        world = celestial.pixel_to_world_values((cols - 1) / 2.0, (rows - 1) / 2.0)
        scales_arcsec = proj_plane_pixel_scales(celestial) * 3600.0
    except (ValueError, KeyError, MemoryError) as exc:  # wcslib's errors subclass ValueError
        warnings.warn(f"WCS unusable: {exc}", stacklevel=2)
        return None, None, None
    ra_deg = float(world[celestial.wcs.lng]) % 360.0
    dec_deg = float(world[celestial.wcs.lat])
    if not (np.isfinite(ra_deg) and np.isfinite(dec_deg)):
        warnings.warn("the WCS gives no finite position for the image centre", stacklevel=2)
        return None, None, None
    if not np.all(np.isfinite(scales_arcsec)) or np.any(scales_arcsec <= 0):
        warnings.warn(f"unusable pixel scales {scales_arcsec.tolist()} arcsec", stacklevel=2)
        return ra_deg, dec_deg, None
    if abs(scales_arcsec[0] / scales_arcsec[1] - 1) > 0.01:
        warnings.warn(f"non-square pixels {scales_arcsec.tolist()} arcsec: using their mean", stacklevel=2)
    return ra_deg, dec_deg, float(np.mean(scales_arcsec))


def _readable_warnings(caught: list[warnings.WarningMessage]) -> list[str]:
    """One string per problem: astropy's verify() splits each into 'Card 19:' + detail."""
    messages: list[str] = []
    prefix = ""
    for warning in caught:
        text = str(warning.message).strip()
        if not text or text.startswith(_BOILERPLATE):
            continue
        if _CARD_PREFIX.match(text):
            prefix = f"{text} "
            continue
        message = f"{warning.category.__name__}: {prefix}{text}"
        prefix = ""
        if message not in messages:
            messages.append(message)
    return messages
