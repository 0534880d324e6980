#!/usr/bin/env python3
"""Writes an all-black 8-bit RGB PNG of WIDTH x HEIGHT pixels (standard library only), for
measuring the memory a pass needs on large images.

usage: python3 scripts/big_png.py OUT.png WIDTH HEIGHT
"""
import struct
import sys
import zlib


def chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def main() -> None:
    out, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    comp = zlib.compressobj(6)
    row = b"\x00" + bytes(w * 3)
    data = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    with open(out, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", data))
        f.write(chunk(b"IEND", b""))


if __name__ == "__main__":
    main()
