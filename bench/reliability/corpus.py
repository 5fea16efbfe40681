"""The malformed corpus: 300+ hostile files, generated from seeds, each with what a
reader should make of it.

- `embed`: odd but valid (CMYK, 16-bit, palette with alpha, a PNG named .jpg...): it
  must be embedded.
- `error`: not an image, or over the pixel limits by its header: it must be a named error.
- `either`: damaged (truncated, bits flipped) or exotic (a format the server does not
  take): embedded or a named error are both right; never a crash, a hang or a 5xx.

Families: truncated (9 formats x 13 cut points), bit-flip, wrong-extension,
empty-or-noise, bomb (header dimensions, deflate, animation, loops), metadata (huge or
looping EXIF, text chunks), mode (colour modes, bit depths, aspect ratios),
other-format, posing (SVG, HTML, PDF, ELF... with image names), name (odd file names)
and special (FIFO, link loops, dangling links, unreadable files and folders: not sent
to servers). manifest.json lists them all.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import sys
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bench.reliability import corpus_bytes as cb
from tests.support.images import photo_array

EMBED, ERROR, EITHER = "embed", "error", "either"
MANIFEST = "manifest.json"
GOOD_FOLDER = "good"
SIZE = (128, 96)  # width, height of the base pictures: small, so the corpus decodes fast
OLD_NS = 1_600_000_000 * 10**9  # a library's files are old (the indexer rereads new ones)
_CUT_BYTES = (1, 4, 12, 30, 100)  # into the header: never an image
_CUT_SHARES = (0.05, 0.15, 0.3, 0.5, 0.7, 0.85, 0.95, 0.995)


@dataclass(frozen=True)
class Entry:
    name: str  # path under the corpus folder
    family: str
    expect: str  # EMBED, ERROR or EITHER
    note: str
    special: bool = False  # not a regular readable file (FIFO, loop, unreadable...)


def _picture(seed: int, size: tuple[int, int] = SIZE) -> Image.Image:
    return Image.fromarray(photo_array(size[1], size[0], seed=seed))


def base_files(seed: int = 0) -> dict[str, tuple[str, bytes]]:
    """The valid files damage starts from: name -> (suffix, bytes)."""
    picture = _picture(seed)
    return {
        "jpeg": ("jpg", cb.encode(picture, "JPEG", quality=90)),
        "jpeg-progressive": ("jpg", cb.encode(picture, "JPEG", quality=90, progressive=True)),
        "png": ("png", cb.encode(picture, "PNG")),
        "webp": ("webp", cb.encode(picture, "WEBP", quality=80)),
        "webp-lossless": ("webp", cb.encode(picture, "WEBP", lossless=True)),
        "gif": ("gif", cb.encode(picture.quantize(128), "GIF")),
        "heic": ("heic", cb.encode(picture, "HEIF")),
        "tiff": ("tif", cb.encode(picture, "TIFF", compression="tiff_lzw")),
        "avif": ("avif", cb.encode(picture, "AVIF")),
    }


class _Writer:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.entries: list[Entry] = []

    def add(self, name: str, data: bytes, family: str, expect: str, note: str) -> Path:
        path = self.folder / family / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self.entries.append(Entry(f"{family}/{name}", family, expect, note))
        return path

    def special(self, name: str, expect: str, note: str, make: Callable[[Path], None]) -> None:
        path = self.folder / "special" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        make(path)
        self.entries.append(Entry(f"special/{name}", "special", expect, note, special=True))


def _truncated(w: _Writer, bases: dict[str, tuple[str, bytes]]) -> None:
    for base, (suffix, data) in bases.items():
        cuts = {n: ERROR for n in _CUT_BYTES} | {int(s * len(data)): EITHER for s in _CUT_SHARES}
        for at, expect in sorted(cuts.items()):
            w.add(f"{base}-{at:06}.{suffix}", cb.cut(data, at), "truncated", expect,
                  f"{base} cut to {at} of {len(data)} bytes")  # fmt: skip


def _bit_flips(w: _Writer, bases: dict[str, tuple[str, bytes]]) -> None:
    rng = np.random.default_rng(7)
    for base, (suffix, data) in bases.items():
        middle = len(data) // 2
        damage = {
            "header-1bit": cb.flip_bits(data, rng, 1, 0, 32),
            "middle-1bit": cb.flip_bits(data, rng, 1, middle, middle + 1),
            "8bits": cb.flip_bits(data, rng, 8),
            "64bits": cb.flip_bits(data, rng, 64),
            "zeroed-block": cb.overwrite(data, middle, b"\0" * 64),
            "ff-block": cb.overwrite(data, len(data) // 3, b"\xff" * 16),
        }
        for kind, damaged in damage.items():
            w.add(f"{base}-{kind}.{suffix}", damaged, "bit-flip", EITHER, f"{base}: {kind}")


def _wrong_extensions(w: _Writer, bases: dict[str, tuple[str, bytes]]) -> None:
    bmp = cb.encode(_picture(1), "BMP")
    pairs = [("png", "jpg"), ("jpeg", "png"), ("webp", "jpg"), ("heic", "jpg"), ("gif", "png"),
             ("tiff", "jpg"), ("avif", "jpg"), ("jpeg", "heic")]  # fmt: skip
    for base, suffix in pairs:
        w.add(
            f"{base}-as.{suffix}",
            bases[base][1],
            "wrong-extension",
            EMBED,
            f"{base} named .{suffix}",
        )
    w.add("bmp-as.gif", bmp, "wrong-extension", EMBED, "BMP named .gif")


def _empty_and_noise(w: _Writer) -> None:
    rng = np.random.default_rng(11)
    for suffix in ("jpg", "png", "heic", "webp", "gif", "tif"):
        w.add(f"empty.{suffix}", b"", "empty-or-noise", ERROR, "0 bytes")
    small = {
        "one-byte.jpg": b"\xff",
        "soi-only.jpg": b"\xff\xd8",
        "signature-only.png": cb.PNG_SIGNATURE,
        "gif-magic-only.gif": b"GIF89a",
        "riff-only.webp": b"RIFF\0\0\0\0WEBP",
        "ftyp-only.heic": b"\0\0\0\x18ftypheic" + bytes(12),
        "tiff-magic-only.tif": b"II*\0",
        "zeros-4k.jpg": bytes(4096),
        "ff-4k.jpg": b"\xff" * 4096,
        "random-64k.png": rng.bytes(65536),
        "random-1m.jpg": rng.bytes(1 << 20),
        "utf16-text.png": "a shopping list, not a photo\n".encode("utf-16"),
    }
    for name, data in small.items():
        w.add(name, data, "empty-or-noise", ERROR, name.rsplit(".", 1)[0])


def _bombs(w: _Writer, bases: dict[str, tuple[str, bytes]]) -> None:
    jpeg, gif = bases["jpeg"][1], bases["gif"][1]
    tiff = cb.encode(_picture(2), "TIFF")
    bmp = cb.encode(_picture(3), "BMP")
    frames = [_picture(s, (32, 32)).quantize(64) for s in range(8)]
    tiny_frames = [Image.new("P", (1, 1), i % 2) for i in range(200)]
    big = {
        "png-100000x100000.png": (cb.png_lying_header(100_000, 100_000), ERROR),
        "png-10001x10000.png": (cb.png_lying_header(10_001, 10_000), ERROR),
        "png-2147483647x1.png": (cb.png_lying_header(2**31 - 1, 1), ERROR),
        "jpeg-65500x65500.jpg": (cb.jpeg_with_size(jpeg, 65_500, 65_500), ERROR),
        "jpeg-9000x9000-lying.jpg": (cb.jpeg_with_size(jpeg, 9000, 9000), EITHER),
        "jpeg-7000x7000-lying.jpg": (cb.jpeg_with_size(jpeg, 7000, 7000), EITHER),
        "gif-screen-65535x65535.gif": (cb.gif_with_screen(gif, 65_535, 65_535), ERROR),
        "webp-canvas-16384x16384.webp": (cb.webp_with_canvas(bases["webp"][1], 16_384, 16_384), ERROR),
        "tiff-65535x65535.tif": (cb.tiff_with_tags(tiff, {256: 65_535, 257: 65_535}), ERROR),
        "bmp-50000x50000.bmp": (cb.bmp_with_size(bmp, 50_000, 50_000), ERROR),
        "deflate-1bit-20000x20000.png": (cb.png_deflate_bomb(20_000, 20_000, 1, 0), ERROR),
        "deflate-gray-12000x12000.png": (cb.png_deflate_bomb(12_000, 12_000, 8, 0), ERROR),
        "deflate-gray-8000x8000.png": (cb.png_deflate_bomb(8000, 8000, 8, 0), EITHER),
        "animated-1000-frames.gif": (_animation(frames * 125, "GIF"), EMBED),
        "animated-screen-30000x30000.gif": (
            cb.gif_with_screen(_animation(tiny_frames, "GIF"), 30_000, 30_000), ERROR),
        "apng-1000-frames.png": (_animation([f.convert("RGB") for f in frames] * 125, "PNG"), EMBED),
        "animated-300-frames.webp": (_animation([f.convert("RGB") for f in frames] * 38, "WEBP"), EMBED),
        "tiff-ifd-loop.tif": (cb.tiff_ifd_loop(tiff), EITHER),
        "jpeg-scan-bomb.jpg": (cb.jpeg_scan_bomb(bases["jpeg-progressive"][1], 300), EITHER),
        "png-ztxt-bomb.png": (cb.png_with_chunks(bases["png"][1], [cb.ztxt_bomb(64 << 20)]), EITHER),
        "png-iccp-bomb.png": (cb.png_with_chunks(bases["png"][1], [cb.iccp_bomb(64 << 20)]), EITHER),
    }  # fmt: skip
    for name, (data, expect) in big.items():
        w.add(name, data, "bomb", expect, name.rsplit(".", 1)[0])


def _animation(frames: list[Image.Image], fmt: str) -> bytes:
    return cb.encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=10, loop=0)


def _exif_jpeg(jpeg: bytes, exif: Image.Exif) -> bytes:
    return cb.jpeg_with_segments(jpeg, [cb.jpeg_segment(0xE1, exif.tobytes())])


def _metadata(w: _Writer, bases: dict[str, tuple[str, bytes]]) -> None:
    jpeg, png = bases["jpeg"][1], bases["png"][1]

    def exif(**tags: object) -> Image.Exif:
        block = Image.Exif()
        for tag, value in tags.items():
            block[int(tag[1:], 16)] = value
        return block

    def dated(value: str) -> bytes:
        block = Image.Exif()
        block.get_ifd(0x8769)[0x9003] = value  # DateTimeOriginal
        return _exif_jpeg(jpeg, block)

    gps = Image.Exif()
    gps.get_ifd(0x8825).update({1: "N", 2: (1000.0, 0.0, 0.0), 3: "E", 4: (0.0, 0.0, 0.0)})
    app1 = cb.jpeg_segment(0xE1, b"Exif\0\0" + b"\0" * 65_000)
    files = {
        "exif-usercomment-60k.jpg": (
            _exif_jpeg(jpeg, exif(x9286=b"ASCII\0\0\0" + b"x" * 60_000)), EMBED),
        "app1-x60-3.9mb.jpg": (cb.jpeg_with_segments(jpeg, [app1] * 60), EITHER),
        "com-x2000.jpg": (cb.jpeg_with_segments(jpeg, [cb.jpeg_segment(0xFE, b"hi")] * 2000), EMBED),
        "xmp-60k.jpg": (cb.jpeg_with_segments(jpeg, [cb.jpeg_segment(
            0xE1, b"http://ns.adobe.com/xap/1.0/\0" + b"<x>" + b"a" * 60_000 + b"</x>")]), EMBED),
        "icc-garbage.jpg": (cb.jpeg_with_segments(jpeg, [cb.jpeg_segment(
            0xE2, b"ICC_PROFILE\0\x01\x01" + b"\x5a" * 4000)]), EITHER),
        "orientation-9.jpg": (_exif_jpeg(jpeg, exif(x0112=9)), EMBED),
        "orientation-0.jpg": (_exif_jpeg(jpeg, exif(x0112=0)), EMBED),
        "orientation-65535.jpg": (_exif_jpeg(jpeg, exif(x0112=65535)), EMBED),
        "orientation-ascii.jpg": (cb.jpeg_with_segments(jpeg, [cb.jpeg_segment(
            0xE1, cb.exif_payload([(0x0112, 2, 2, b"6\0")]))]), EMBED),
        "date-9999-99-99.jpg": (dated("9999:99:99 99:99:99"), EMBED),
        "date-zeros.jpg": (dated("0000:00:00 00:00:00"), EMBED),
        "date-nul.jpg": (dated("\0" * 19), EMBED),
        "date-year-1.jpg": (dated("0001:01:01 00:00:00"), EMBED),
        "gps-1000-degrees.jpg": (_exif_jpeg(jpeg, gps), EMBED),
        "exif-ifd-loop.jpg": (cb.jpeg_with_segments(jpeg, [cb.jpeg_segment(0xE1, cb.exif_loop())]), EITHER),
        "exif-count-overflow.jpg": (cb.jpeg_with_segments(
            jpeg, [cb.jpeg_segment(0xE1, cb.exif_count_overflow())]), EITHER),
        "exif-offset-past-end.jpg": (cb.jpeg_with_segments(
            jpeg, [cb.jpeg_segment(0xE1, cb.exif_offset_past_end())]), EITHER),
        "png-exif-4mb.png": (cb.png_with_chunks(
            png, [cb.png_chunk(b"eXIf", b"II*\0" + b"\0" * (4 << 20))]), EITHER),
        "png-3000-text-chunks.png": (cb.png_with_chunks(
            png, [cb.png_chunk(b"tEXt", b"k\0v")] * 3000), EMBED),
        "png-itxt-1mb.png": (cb.png_with_chunks(
            png, [cb.png_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + b"a" * (1 << 20))]), EITHER),
        "png-bad-crc-text.png": (cb.png_with_chunks(
            png, [cb.png_chunk(b"tEXt", b"k\0v")[:-4] + b"\0\0\0\0"]), EITHER),
        "webp-exif-4mb.webp": (cb.encode(_picture(4), "WEBP", exif=b"Exif\0\0" + b"\0" * (4 << 20)), EITHER),
    }  # fmt: skip
    for name, (data, expect) in files.items():
        w.add(name, data, "metadata", expect, name.rsplit(".", 1)[0])


def _modes(w: _Writer) -> None:
    picture = _picture(5)
    rgb = np.asarray(picture)
    deep = rgb.astype(np.uint16) * 257
    alpha = np.linspace(0, 65535, SIZE[0], dtype=np.uint16)[None, :, None].repeat(SIZE[1], 0)
    gray4 = (np.asarray(picture.convert("L")) >> 4).astype(np.uint8)
    packed = b"".join(b"\0" + bytes((a << 4) | b for a, b in zip(r[::2], r[1::2], strict=True))
                      for r in gray4.tolist())  # fmt: skip
    palette = picture.quantize(64)
    all_alpha = picture.quantize(16)
    all_alpha.info["transparency"] = bytes(range(0, 256, 16))
    files = {
        "cmyk.jpg": (cb.encode(picture.convert("CMYK"), "JPEG"), EMBED),
        "gray.jpg": (cb.encode(picture.convert("L"), "JPEG"), EMBED),
        "1x1.jpg": (cb.encode(picture.resize((1, 1)), "JPEG"), EMBED),
        "1x1.png": (cb.encode(picture.resize((1, 1)), "PNG"), EMBED),
        "gray.png": (cb.encode(picture.convert("L"), "PNG"), EMBED),
        "gray-alpha.png": (cb.encode(picture.convert("LA"), "PNG"), EMBED),
        "bilevel.png": (cb.encode(picture.convert("1"), "PNG"), EMBED),
        "palette.png": (cb.encode(palette, "PNG"), EMBED),
        "palette-transparent-index.png": (cb.encode(palette, "PNG", transparency=0), EMBED),
        "palette-alpha-every-entry.png": (cb.encode(all_alpha, "PNG"), EMBED),
        "palette-2bit.png": (cb.encode(picture.quantize(4), "PNG", bits=2), EMBED),
        "gray-4bit.png": (cb.png_of_rows(SIZE[0], SIZE[1], 4, 0, packed), EMBED),
        "gray-16bit.png": (cb.encode(Image.fromarray(deep[..., 0]), "PNG"), EMBED),
        "rgb-16bit.png": (cb.png_16bit(deep), EMBED),
        "rgba-16bit.png": (cb.png_16bit(np.concatenate([deep, alpha], axis=2)), EMBED),
        "rgba.png": (cb.encode(picture.convert("RGBA"), "PNG"), EMBED),
        "1x20000.png": (cb.encode(Image.new("RGB", (1, 20_000), (90, 20, 200)), "PNG"), EMBED),
        "20000x1.png": (cb.encode(Image.new("RGB", (20_000, 1), (90, 20, 200)), "PNG"), EMBED),
        "3x60000.png": (cb.encode(Image.new("L", (3, 60_000), 128), "PNG"), EMBED),
        "rgba.webp": (cb.encode(picture.convert("RGBA"), "WEBP"), EMBED),
        "rgba.heic": (cb.encode(picture.convert("RGBA"), "HEIF"), EMBED),
        "rgba.tif": (cb.encode(picture.convert("RGBA"), "TIFF"), EMBED),
        "cmyk.tif": (cb.encode(picture.convert("CMYK"), "TIFF"), EMBED),
        "lab.tif": (cb.encode(picture.convert("LAB"), "TIFF"), EITHER),
        "i16.tif": (cb.encode(Image.fromarray(deep[..., 1]), "TIFF"), EMBED),
        "float32.tif": (cb.encode(picture.convert("F"), "TIFF"), EITHER),
        "int32.tif": (cb.encode(picture.convert("I"), "TIFF"), EITHER),
        "bilevel-group4.tif": (cb.encode(picture.convert("1"), "TIFF", compression="group4"), EMBED),
        "ycbcr-jpeg.tif": (cb.encode(picture, "TIFF", compression="jpeg"), EMBED),
        "transparent.gif": (cb.encode(palette, "GIF", transparency=0), EMBED),
        "32bit.bmp": (cb.encode(picture.convert("RGBA"), "BMP"), EMBED),
        "1bit.bmp": (cb.encode(picture.convert("1"), "BMP"), EMBED),
    }  # fmt: skip
    for name, (data, expect) in files.items():
        w.add(name, data, "mode", expect, name.rsplit(".", 1)[0])


def _other_formats(w: _Writer) -> None:
    picture = _picture(6)
    deep_ppm = b"P6 16 16 65535\n" + (np.full((16, 16, 3), 40000, ">u2")).tobytes()
    files = {
        "jpeg2000.jpg": cb.encode(picture, "JPEG2000"),
        "ico.png": cb.encode(picture, "ICO"),
        "tga.jpg": cb.encode(picture, "TGA"),
        "pcx.png": cb.encode(picture, "PCX"),
        "ppm.jpg": cb.encode(picture, "PPM"),
        "ppm-16bit.png": deep_ppm,
        "qoi.png": cb.encode(picture, "QOI"),
        "dds.jpg": cb.encode(picture, "DDS"),
        "sgi.png": cb.encode(picture, "SGI"),
        "spider-float.tif": cb.encode(picture.convert("F"), "SPIDER"),
        "msp.gif": cb.encode(picture.convert("1"), "MSP"),
        "xbm.png": cb.encode(picture.convert("1"), "XBM"),
        "eps.jpg": b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n",
    }
    for name, data in files.items():
        w.add(name, data, "other-format", EITHER, name.rsplit(".", 1)[0])


def _posing(w: _Writer, bases: dict[str, tuple[str, bytes]]) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>'
    laughs = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
              + b"".join(b'<!ENTITY %c "%s">' % (98 + i, (b"&%c;" % (97 + i)) * 10) for i in range(8))
              + b']><svg xmlns="http://www.w3.org/2000/svg">&i;</svg>')  # fmt: skip
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("a.txt", "hello")
    elf = Path(os.path.realpath(sys.executable)).read_bytes()[:8192]
    jpeg, gif, png = bases["jpeg"][1], bases["gif"][1], bases["png"][1]
    bad = {
        "svg.jpg": svg,
        "svg.png": svg,
        "billion-laughs.png": laughs,
        "html.jpg": b"<!doctype html><html><body><script>alert(1)</script></body></html>",
        "json.webp": b'{"not": "an image"}',
        "text.png": b"hello, world\n" * 20,
        "pdf.jpg": b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n",
        "zip.png": archive.getvalue(),
        "gzip-of-jpeg.jpg": gzip.compress(jpeg),
        "elf.jpg": elf,
        "shell.gif": b"#!/bin/sh\nrm -rf /tmp/never\n",
        "php-in-gif-header.gif": b"GIF89a<?php system($_GET['c']); ?>",
        "xml.tif": b'<?xml version="1.0"?><image/>',
    }
    for name, data in bad.items():
        w.add(name, data, "posing", ERROR, name.rsplit(".", 1)[0])
    polyglots = {
        "gif-with-zip-appended.gif": gif + archive.getvalue(),
        "jpeg-with-html-after-eoi.jpg": jpeg + b"<html><script>alert(1)</script></html>",
        "png-with-script-text.png": cb.png_with_chunks(
            png, [cb.png_chunk(b"tEXt", b"Comment\0<script>alert(1)</script>")]
        ),
    }
    for name, data in polyglots.items():
        w.add(name, data, "posing", EMBED, name.rsplit(".", 1)[0])


def _names(w: _Writer) -> None:
    data = cb.encode(_picture(8), "JPEG")
    folder = w.folder / "name"
    folder.mkdir(parents=True, exist_ok=True)
    names = ["new\nline.jpg", "x" * 240 + ".jpg", "photo\u202egpj.jpg", "cafe\u0301.jpg",
             "-rf.jpg", "quote'\"back\\slash.jpg"]  # fmt: skip
    for name in names:
        w.add(name, data, "name", EMBED, repr(name)[:40])
    # A name that is not UTF-8: Python carries it as surrogate escapes.
    raw = os.fsencode(folder) + b"/not-utf8-\xff\xfe.jpg"
    with open(raw, "wb") as f:
        f.write(data)
    w.entries.append(Entry("name/" + os.fsdecode(b"not-utf8-\xff\xfe.jpg"), "name", EMBED,
                           "bytes 0xff 0xfe in the name"))  # fmt: skip


def _specials(w: _Writer, good: bytes) -> None:
    def write_good(path: Path) -> None:
        path.write_bytes(good)

    def unreadable(path: Path) -> None:
        write_good(path)
        path.chmod(0)

    def unreadable_folder(path: Path) -> None:
        path.mkdir()
        for i in range(2):
            write_good(path / f"inside-{i}.jpg")
        path.chmod(0)

    def loop_of_two(path: Path) -> None:
        other = path.with_name("loop-b.jpg")
        path.symlink_to(other.name)
        other.symlink_to(path.name)

    w.special("fifo.jpg", EITHER, "a named pipe: opening it waits for a writer", os.mkfifo)
    w.special("dangling.jpg", ERROR, "symlink to nothing", lambda p: p.symlink_to("gone.jpg"))
    w.special("self-loop.jpg", ERROR, "symlink to itself", lambda p: p.symlink_to(p.name))
    w.special("loop-a.jpg", ERROR, "two symlinks to each other", loop_of_two)
    w.special("folder.jpg", ERROR, "a folder named like a photo", lambda p: p.mkdir())
    w.special("unreadable.jpg", ERROR, "mode 000 (read as nobody)", unreadable)
    w.special("dev-zero.jpg", ERROR, "symlink to /dev/zero", lambda p: p.symlink_to("/dev/zero"))
    w.special("locked", ERROR, "folder of 2 photos, mode 000", unreadable_folder)
    w.special("walk-loop", ERROR, "folder symlink to its parent", lambda p: p.symlink_to(".."))


def good_photos(folder: Path, count: int = 6) -> list[Path]:
    """Valid photos to mix in with the bad ones (JPEG and PNG, distinct pictures)."""
    out = []
    for i in range(count):
        suffix, fmt = ("jpg", "JPEG") if i % 2 == 0 else ("png", "PNG")
        path = folder / GOOD_FOLDER / f"good-{i}.{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(cb.encode(_picture(1000 + i), fmt))
        os.utime(path, ns=(OLD_NS, OLD_NS))
        out.append(path)
    return out


def build(folder: Path, seed: int = 0) -> list[Entry]:
    """Write the corpus (and its manifest) into an empty `folder`."""
    if folder.exists():
        make_removable(folder)
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    w = _Writer(folder)
    bases = base_files(seed)
    _truncated(w, bases)
    _bit_flips(w, bases)
    _wrong_extensions(w, bases)
    _empty_and_noise(w)
    _bombs(w, bases)
    _metadata(w, bases)
    _modes(w)
    _other_formats(w)
    _posing(w, bases)
    _names(w)
    for entry in w.entries:
        os.utime(os.fsencode(folder / entry.name), ns=(OLD_NS, OLD_NS))
    _specials(w, bases["jpeg"][1])
    (folder / MANIFEST).write_text(json.dumps([asdict(e) for e in w.entries], indent=0))
    return w.entries


def load(folder: Path) -> list[Entry]:
    return [Entry(**e) for e in json.loads((folder / MANIFEST).read_text())]


def make_removable(folder: Path) -> None:
    """Give back the modes `build` took away, so the folder can be deleted."""
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)


def big_truncated_jpegs(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """`count` cuts (20% to 95%) of one large photo-like JPEG: each makes the decoder
    allocate the whole picture before it finds the data missing."""
    width, height = size
    data = cb.encode(Image.fromarray(photo_array(height, width, seed=42)), "JPEG", quality=85)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, share in enumerate(np.linspace(0.2, 0.95, count)):
        path = folder / f"big-cut-{i:02}.jpg"
        path.write_bytes(data[: int(share * len(data))])
        out.append(path)
    return out
