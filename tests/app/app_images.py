"""Test images made on the fly: an asymmetric "garment" and encoders for every format and oddity the
server must take (nothing is downloaded)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, ImageDraw


def garment(size: int = 112, light_background: bool = False) -> Image.Image:
    """A light, asymmetric shape on a dark background, like a Fashion-MNIST image (or the inverse, like a
    photo on a white table). Asymmetric so that a wrong rotation or flip changes the pixels."""
    background, ink = (255, 0) if light_background else (0, 255)
    image = Image.new("L", (size, size), background)
    draw = ImageDraw.Draw(image)
    unit = size / 28
    # A tall bar on the left and a short arm at the top right: an "L" turned on its head.
    draw.rectangle([6 * unit, 4 * unit, 12 * unit, 24 * unit], fill=ink)
    draw.rectangle([12 * unit, 4 * unit, 22 * unit, 9 * unit], fill=ink)
    draw.ellipse([15 * unit, 15 * unit, 20 * unit, 20 * unit], fill=(ink + background) // 2)
    return image


def encode(image: Image.Image, image_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def garment_png(size: int = 112, light_background: bool = False) -> bytes:
    return encode(garment(size, light_background), "PNG")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height pixels, followed by a tiny IDAT: a decompression bomb's header."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit gray
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def gif_with_oversized_frame(frame_width: int, frame_height: int) -> bytes:
    """A GIF whose logical screen is 1x1 but whose first frame claims a huge size: Pillow grows the canvas
    to the frame, so the pixel count must be judged after opening, not from the screen size."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, frame_width, frame_height, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b"\x3b"


def exif_rotated_jpeg(upright: Image.Image, quality: int = 95) -> bytes:
    """The JPEG a phone writes when held sideways: pixels stored rotated, EXIF Orientation=6 saying "rotate
    90 degrees clockwise to display". Displayed correctly, it is ``upright``."""
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise; orientation 6 undoes it
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    return encode(stored, "JPEG", quality=quality, exif=exif.tobytes())


def animated_gif(first: Image.Image, second: Image.Image) -> bytes:
    return encode(first.convert("P"), "GIF", save_all=True, append_images=[second.convert("P")], duration=100, loop=0)


def palette_with_transparency(upright: Image.Image) -> bytes:
    """A palette PNG of a dark garment whose background colour is marked transparent (tRNS), as cut-out
    product pictures and icon editors write it. Shown on white, as a viewer shows it, it is the garment in
    ``upright`` with light and dark swapped."""
    inverse = upright.point(lambda value: 255 - value)
    palette = Image.merge("RGB", [inverse] * 3).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    background_index = palette.getpixel((0, 0))
    return encode(palette, "PNG", transparency=background_index)


def rgba_cutout(upright: Image.Image) -> bytes:
    """An RGBA PNG: a black garment, opaque, on fully transparent *black* pixels. Ignoring alpha would show
    black on black; compositing on white, as a viewer does, shows the garment."""
    alpha = upright  # opaque where the garment is
    black = Image.new("L", upright.size, 0)
    return encode(Image.merge("RGBA", [black, black, black, alpha]), "PNG")


def sixteen_bit_png(upright: Image.Image) -> bytes:
    """The same picture as a 16-bit gray PNG (values scaled by 257, so 255 -> 65535)."""
    import numpy as np

    wide = np.asarray(upright, dtype=np.uint16) * 257
    return encode(Image.fromarray(wide), "PNG")
