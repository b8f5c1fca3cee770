"""Peak memory of upscaling one large photo, for several tile sizes (issue 7: it must not grow
with the number of tiles).

Each tile size runs in a fresh process (so peak RSS is that run's alone): a (size, size, 3)
uint8 photo is upscaled by ``srgan.Upscaler`` on the CPU and the process reports its peak RSS
(``ru_maxrss``). The input and the output (size x scale)^2 x 3 bytes are held once; the tiles
add their activations, which grow with the tile's area, not with the number of tiles.

    python benchmarks/photo_memory.py --size 2048 --tiles 128,256     # photo-x4: ~10 min on 2 cores
    python benchmarks/photo_memory.py --smoke                          # tiny model: seconds
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from common import parse, parser

CHILD = """
import resource, sys, time
import numpy as np
import torch
from srgan import Generator, GeneratorConfig, Upscaler
from srgan.tiling import plan_tiles
size, tile, model = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if model == "tiny":
    up = Upscaler(Generator(GeneratorConfig(channels=8, blocks=1)), device="cpu", tile=tile)
else:
    up = Upscaler.from_pretrained(model, device="cpu", tile=tile)
photo = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
t = time.time()
out = up.upscale(photo)
assert out.shape == (size * up.scale, size * up.scale, 3)
tiles = len(plan_tiles(size, size, up.tile))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.time() - t, tiles, up.overlap)
"""


def main(argv=None) -> list[dict]:
    p = parser(__doc__)
    p.add_argument("--size", type=int, default=2048, help="LR side in pixels [default: 2048]")
    p.add_argument("--tiles", default="128,256", help="tile sizes, comma-separated [default: 128,256]")
    p.add_argument("--model", default="photo-x4", help="embedded model, file, or 'tiny' [default: photo-x4]")
    args = parse(p, argv, "a 256 px photo and a tiny model: seconds")
    if args.smoke:
        args.size, args.tiles, args.model = 256, "32,128", "tiny"
    rows = []
    print(f"model {args.model}, {args.size}x{args.size} RGB uint8 photo, CPU")
    print("| tile | tiles | overlap | peak RSS MB | seconds |\n|---:|---:|---:|---:|---:|")
    for tile in (int(t) for t in args.tiles.split(",")):
        proc = subprocess.run([sys.executable, "-c", CHILD, str(args.size), str(tile), args.model],
                              capture_output=True, text=True, check=True)
        rss, seconds, n, overlap = proc.stdout.split()
        rows.append({"tile": tile, "tiles": int(n), "overlap": int(overlap), "peak_rss_mb": float(rss),
                     "seconds": float(seconds)})
        print(f"| {tile} | {n} | {overlap} | {float(rss):.0f} | {float(seconds):.1f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "size": args.size, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
