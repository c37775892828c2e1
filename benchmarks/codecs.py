"""Standard codecs on 224² photographs: bytes, PSNR, encode/decode time, and process-pool throughput.

    python benchmarks/codecs.py [--codecs jpeg hevc] [--repeats 3] [--pool-codec hevc --pool-images 64]

Each codec runs at its registered default (mid) quality, single-threaded, in this process; times
are medians over photos × repeats. The pool section codes ``--pool-images`` images once in one
process and once over all cores (pool start-up included). The last line is the headline.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

from splitbench.codecs import CODECS, available_codecs, encode_decode_many, get_codec, list_codecs
from splitbench.codecs.samples import psnr, sample_photos


def measure(name: str, photos: list[np.ndarray], repeats: int) -> dict:
    codec = get_codec(name, CODECS.get(name).default_quality)
    sizes, quality, encode_ms, decode_ms = [], [], [], []
    for image in photos:
        for _ in range(repeats):
            start = time.perf_counter()
            data = codec.encode(image)
            middle = time.perf_counter()
            decoded = codec.decode(data)
            encode_ms.append(1e3 * (middle - start))
            decode_ms.append(1e3 * (time.perf_counter() - middle))
        sizes.append(len(data))
        quality.append(psnr(image, decoded))
    pixels = photos[0].shape[0] * photos[0].shape[1]
    return {
        "codec": name,
        "quality": codec.quality,
        "bytes": statistics.mean(sizes),
        "bpp": 8 * statistics.mean(sizes) / pixels,
        "psnr": statistics.mean(quality),
        "encode_ms": statistics.median(encode_ms),
        "decode_ms": statistics.median(decode_ms),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codecs", nargs="+", choices=list_codecs(), help="default: every available codec")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per photo")
    parser.add_argument("--pool-codec", default="hevc", choices=list_codecs())
    parser.add_argument("--pool-images", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None, help="pool size (default: all cores)")
    args = parser.parse_args(argv)

    photos = sample_photos(224)
    available = available_codecs()
    names = args.codecs or available
    skipped = sorted(set(list_codecs()) - set(available))
    print(
        f"{len(photos)} photos at 224², {args.repeats} repeats; unavailable: {', '.join(skipped) or 'none'}"
    )
    print(f"{'codec':8} {'quality':>7} {'bytes':>8} {'bpp':>6} {'PSNR dB':>8} {'enc ms':>8} {'dec ms':>8}")
    rows = {}
    for name in names:
        row = rows[name] = measure(name, photos, args.repeats)
        print(
            f"{name:8} {row['quality']:>7g} {row['bytes']:>8.0f} {row['bpp']:>6.3f} {row['psnr']:>8.2f} "
            f"{row['encode_ms']:>8.1f} {row['decode_ms']:>8.1f}"
        )

    codec = get_codec(args.pool_codec, CODECS.get(args.pool_codec).default_quality)
    images = [photos[i % len(photos)] for i in range(args.pool_images)]
    single = encode_decode_many(codec, images, workers=1)
    pooled = encode_decode_many(codec, images, workers=args.workers)
    assert [s.data for s in single.samples] == [s.data for s in pooled.samples], "pool changed the bytes"
    ratio = pooled.images_per_second / single.images_per_second
    print(
        f"pool ({args.pool_codec}, {len(images)} images): 1 process {single.images_per_second:.1f} img/s, "
        f"{pooled.workers} workers {pooled.images_per_second:.1f} img/s "
        f"(x{ratio:.2f}; {os.cpu_count()} cores)"
    )
    headline = f"process pool x{ratio:.2f} on {pooled.workers} workers"
    reference = rows.get("jpeg")
    if reference:  # the codec with the fewest bytes at no less PSNR than JPEG, relative to JPEG
        lossy = [r for r in rows.values() if r["psnr"] >= reference["psnr"] and np.isfinite(r["psnr"])]
        best = min(lossy, key=lambda r: r["bytes"])
        headline = (
            f"{best['codec']} q{best['quality']:g} needs {best['bytes'] / reference['bytes']:.2f}x the bytes "
            f"of jpeg q{reference['quality']:g} at >= its PSNR "
            f"({best['psnr']:.1f} vs {reference['psnr']:.1f} dB); {headline}"
        )
    print(f"headline: {headline}")


if __name__ == "__main__":
    sys.exit(main())
