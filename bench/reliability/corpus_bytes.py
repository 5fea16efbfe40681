"""Byte surgery on image files for the malformed corpus: PNG chunks, JPEG segments, TIFF
and EXIF structures, WebP and GIF headers, written by hand where Pillow would refuse to
write something so wrong (a header that lies, a loop, a bomb)."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterable

import numpy as np
from PIL import Image

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR_END = 8 + 25  # signature, then IHDR: length, type, 13 bytes, CRC


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


# ------------------------------------------------------------------------------ PNG


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, depth: int, colour: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr)


def png_of_rows(width: int, height: int, depth: int, colour: int, raw: bytes) -> bytes:
    """A PNG whose IDAT is `raw` (filter bytes included), deflated: any bit depth and
    colour type, including the 16-bit ones Pillow does not write."""
    return (
        png_header(width, height, depth, colour)
        + png_chunk(b"IDAT", zlib.compress(raw, 9))
        + png_chunk(b"IEND", b"")
    )


def png_16bit(pixels: np.ndarray) -> bytes:
    """uint16 H x W x C (C = 3: RGB, 4: RGBA) as a 16-bit PNG."""
    height, width, channels = pixels.shape
    colour = {3: 2, 4: 6}[channels]
    rows = pixels.astype(">u2").reshape(height, width * channels)
    raw = b"".join(b"\0" + row.tobytes() for row in rows)
    return png_of_rows(width, height, 16, colour, raw)


def png_deflate_bomb(width: int, height: int, depth: int, colour: int) -> bytes:
    """A PNG of `height` identical all-zero rows, deflated row block by row block, so
    a many-gigapixel image costs a few kilobytes to write and to store."""
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    line = b"\0" * (1 + (width * channels * depth + 7) // 8)
    rows_per_block = max(1, (1 << 20) // len(line))
    block = line * rows_per_block
    packer = zlib.compressobj(9)
    parts = []
    for start in range(0, height, rows_per_block):
        parts.append(packer.compress(block[: len(line) * min(rows_per_block, height - start)]))
    parts.append(packer.flush())
    return (
        png_header(width, height, depth, colour)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def png_lying_header(width: int, height: int) -> bytes:
    """An RGB PNG whose IHDR claims width x height over a few hundred bytes of pixels."""
    return (
        png_header(width, height, 8, 2)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 1000))
        + png_chunk(b"IEND", b"")
    )


def png_with_chunks(png: bytes, chunks: Iterable[bytes]) -> bytes:
    """`png` with extra chunks right after IHDR."""
    return png[:_IHDR_END] + b"".join(chunks) + png[_IHDR_END:]


def ztxt_bomb(size: int) -> bytes:
    """A zTXt chunk that inflates to `size` bytes."""
    return png_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"A" * size, 9))


def iccp_bomb(size: int) -> bytes:
    return png_chunk(b"iCCP", b"icc\0\0" + zlib.compress(b"\0" * size, 9))


# ----------------------------------------------------------------------------- JPEG


def jpeg_with_segments(jpeg: bytes, segments: Iterable[bytes]) -> bytes:
    """`jpeg` with extra marker segments right after SOI."""
    return jpeg[:2] + b"".join(segments) + jpeg[2:]


def jpeg_segment(marker: int, payload: bytes) -> bytes:
    if len(payload) > 65533:
        raise ValueError("a JPEG segment holds at most 65533 bytes")
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def jpeg_with_size(jpeg: bytes, width: int, height: int) -> bytes:
    """`jpeg` with its frame header (SOF0/SOF2) claiming width x height."""
    for marker in (b"\xff\xc0", b"\xff\xc2", b"\xff\xc1"):
        at = jpeg.find(marker)
        if at >= 0:
            out = bytearray(jpeg)
            out[at + 5 : at + 9] = struct.pack(">HH", height, width)
            return bytes(out)
    raise ValueError("no frame header found")


def jpeg_scan_bomb(progressive_jpeg: bytes, copies: int) -> bytes:
    """A progressive JPEG whose last scan is repeated `copies` times before EOI."""
    end = progressive_jpeg.rfind(b"\xff\xd9")
    last_scan = progressive_jpeg.rfind(b"\xff\xda", 0, end)
    scan = progressive_jpeg[last_scan:end]
    return progressive_jpeg[:end] + scan * copies + progressive_jpeg[end:]


# ----------------------------------------------------------------------- TIFF, EXIF


def _ifd0(tiff: bytes) -> int:
    if tiff[:4] != b"II*\0":
        raise ValueError("expected a little-endian TIFF")
    return struct.unpack_from("<I", tiff, 4)[0]


def tiff_with_tags(tiff: bytes, values: dict[int, int]) -> bytes:
    """A little-endian TIFF with the first IFD's SHORT/LONG tags set to `values` (the
    caller keeps SHORT values under 65536)."""
    out = bytearray(tiff)
    ifd = _ifd0(tiff)
    (count,) = struct.unpack_from("<H", tiff, ifd)
    for n in range(count):
        entry = ifd + 2 + 12 * n
        tag, kind = struct.unpack_from("<HH", tiff, entry)
        if tag in values:
            fmt = "<H" if kind == 3 else "<I"
            struct.pack_into(fmt, out, entry + 8, values[tag])
    return bytes(out)


def tiff_ifd_loop(tiff: bytes) -> bytes:
    """A little-endian TIFF whose first IFD names itself as the next one."""
    out = bytearray(tiff)
    ifd = _ifd0(tiff)
    (count,) = struct.unpack_from("<H", tiff, ifd)
    struct.pack_into("<I", out, ifd + 2 + 12 * count, ifd)
    return bytes(out)


def exif_payload(entries: list[tuple[int, int, int, bytes]], next_ifd: int = 0) -> bytes:
    """An APP1 Exif payload with one IFD at offset 8: entries are (tag, type, count,
    4-byte value or offset)."""
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHI", tag, kind, count) + value.ljust(4, b"\0")[:4]
    return b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", next_ifd)


def exif_loop() -> bytes:
    """IFD0 whose next IFD and Exif sub-IFD are both IFD0 itself."""
    return exif_payload(
        [(0x0112, 3, 1, struct.pack("<H", 6)), (0x8769, 4, 1, struct.pack("<I", 8))], next_ifd=8
    )


def exif_count_overflow() -> bytes:
    """An IFD that says it has 65535 entries and holds one."""
    payload = bytearray(exif_payload([(0x0112, 3, 1, struct.pack("<H", 1))]))
    struct.pack_into("<H", payload, 6 + 8, 0xFFFF)
    return bytes(payload)


def exif_offset_past_end() -> bytes:
    """An ASCII tag of 1000 characters stored at an offset far past the end."""
    return exif_payload([(0x010E, 2, 1000, struct.pack("<I", 0x7FFFFFF0))])


# ----------------------------------------------------------------------- WebP, GIF


def riff_chunk(kind: bytes, data: bytes) -> bytes:
    return kind + struct.pack("<I", len(data)) + data + (b"\0" if len(data) % 2 else b"")


def webp_with_canvas(lossy_webp: bytes, width: int, height: int) -> bytes:
    """An extended WebP (VP8X) claiming a width x height canvas around a small frame."""
    at = lossy_webp.find(b"VP8 ")
    if at < 0:
        raise ValueError("expected a lossy (VP8) WebP")
    (size,) = struct.unpack_from("<I", lossy_webp, at + 4)
    frame = riff_chunk(b"VP8 ", lossy_webp[at + 8 : at + 8 + size])
    canvas = struct.pack("<I", 0) + (width - 1).to_bytes(3, "little")
    canvas += (height - 1).to_bytes(3, "little")
    body = b"WEBP" + riff_chunk(b"VP8X", canvas) + frame
    return b"RIFF" + struct.pack("<I", len(body)) + body


def gif_with_screen(gif: bytes, width: int, height: int) -> bytes:
    """A GIF whose logical screen (what Pillow takes for its size) is width x height."""
    return gif[:6] + struct.pack("<HH", width, height) + gif[10:]


def bmp_with_size(bmp: bytes, width: int, height: int) -> bytes:
    out = bytearray(bmp)
    struct.pack_into("<ii", out, 18, width, height)
    return bytes(out)


# ----------------------------------------------------------------------- damage


def cut(data: bytes, at: int) -> bytes:
    return data[: max(0, min(at, len(data) - 1))]


def flip_bits(data: bytes, rng: np.random.Generator, bits: int, lo: int = 0, hi: int = 0) -> bytes:
    """`data` with `bits` random bits flipped between byte offsets lo and hi (0: the end)."""
    out = bytearray(data)
    hi = hi or len(data)
    for position in rng.integers(lo, hi, bits):
        out[int(position)] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def overwrite(data: bytes, at: int, filler: bytes) -> bytes:
    return data[:at] + filler + data[at + len(filler) :]
