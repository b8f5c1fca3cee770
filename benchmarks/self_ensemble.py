"""Self-ensemble's gain and cost: `srgan eval` with and without `--self-ensemble`, in one run.

Both evaluations use the same model, folders, protocol and seed; the gain is the difference
of the model's mean scores (the baselines are the same in both). The cost is the ratio of
the time spent in the model's forward passes (timed around the upscaler's module, so the
baselines and image loading are left out), as wall and as CPU time of this process: on a
shared machine the CPU-time ratio is the steadier figure.

    python benchmarks/self_ensemble.py --model photo-x4 --hr ../shared/datasets/Set5 --hr ../shared/datasets/Set14
    python benchmarks/self_ensemble.py --model galaxy-x4 --hr "$(bash benchmarks/train_defaults.sh galaxy-heldout)" --max-images 5
    python benchmarks/self_ensemble.py --smoke     # tiny model, synthetic photos: seconds
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from srgan.checkpoint import save_model
from srgan.evaluate import evaluate_folders
from srgan.models import Generator, GeneratorConfig
from srgan.upscale import Upscaler
from common import parse, parser
from throughput import machine_info, machine_line, write_json


class ForwardTimer:
    """Wall and CPU seconds spent inside ``module``'s forward calls."""

    def __init__(self, module: torch.nn.Module):
        self.wall = self.cpu = 0.0
        self.calls = 0
        module.register_forward_pre_hook(self._start)
        module.register_forward_hook(self._stop)

    def _start(self, module, args):
        self._t = (time.perf_counter(), time.process_time())

    def _stop(self, module, args, output):
        self.wall += time.perf_counter() - self._t[0]
        self.cpu += time.process_time() - self._t[1]
        self.calls += 1


def first_images(folders: list[Path], n: int | None, tmp: Path) -> list[Path]:
    """The folders themselves, or (``n`` given) folders of links to the first ``n`` files of each, by name."""
    if n is None:
        return folders
    out = []
    for folder in folders:
        sub = tmp / folder.name
        sub.mkdir()
        for f in sorted(p for p in folder.iterdir() if p.is_file())[:n]:
            (sub / f.name).symlink_to(f.resolve())
        out.append(sub)
    return out


def smoke_data(tmp: Path) -> tuple[Path, list[Path]]:
    """A tiny x2 photo model and one folder of three synthetic photos."""
    torch.manual_seed(0)
    model = tmp / "tiny.safetensors"
    save_model(model, Generator(GeneratorConfig(scale=2, channels=8, blocks=1)).eval())
    folder = tmp / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        small = rng.uniform(30, 220, (8, 10, 3)).astype(np.uint8)
        Image.fromarray(small).resize((40, 32), Image.BICUBIC).save(folder / f"{i}.png")
    return model, [folder]


def measure(model, folders, ensemble: bool, device: str) -> tuple[dict, ForwardTimer, float]:
    up = Upscaler.from_pretrained(model, device=device, precision="fp32", self_ensemble=ensemble)
    with torch.no_grad():  # warm-up (first-call allocations) outside the timings
        up.model(torch.zeros(1, up.model.config.in_channels, 16, 16, device=up.device))
    timer = ForwardTimer(up.model)
    t0 = time.perf_counter()
    report = evaluate_folders(up, folders).to_dict()
    return report, timer, time.perf_counter() - t0


def parse_args(argv=None):
    p = parser(__doc__)
    p.add_argument("--model", default="photo-x4", help="model name or file [default: photo-x4]")
    p.add_argument("--hr", action="append", type=Path, default=[], help="folder of HR images (repeat)")
    p.add_argument("--max-images", type=int, default=None, help="only the first N images of each folder, by name")
    p.add_argument("--device", default="cpu", help="[default: cpu]")
    a = parse(p, argv, "a tiny model on three synthetic photos: seconds")
    if not a.smoke and not a.hr:
        p.error("give --hr FOLDER (or --smoke)")
    return a


def main(argv=None) -> dict:
    args = parse_args(argv)
    machine = machine_info(torch.device(args.device))
    print(machine_line(machine))
    with tempfile.TemporaryDirectory(prefix="srgan-self-ensemble-") as tmp:
        tmp = Path(tmp)
        model, folders = smoke_data(tmp) if args.smoke else (args.model, first_images(args.hr, args.max_images, tmp))
        plain, t_plain, wall_plain = measure(model, folders, False, args.device)
        ens, t_ens, wall_ens = measure(model, folders, True, args.device)
    rows = []
    for dp, de in zip(plain["datasets"], ens["datasets"]):
        gain = {k: de["mean"]["model"][k] - dp["mean"]["model"][k] for k in dp["metrics"]}
        rows.append({"dataset": dp["name"], "n_images": dp["n_images"], "plain": dp["mean"]["model"],
                     "self_ensemble": de["mean"]["model"], "gain": gain})
        cells = ", ".join(f"{k} {dp['mean']['model'][k]:.4f} -> {de['mean']['model'][k]:.4f} ({v:+.4f})"
                          for k, v in gain.items())
        print(f"GAIN {dp['name']} ({dp['n_images']} img): {cells}")
    cost = {"forward_wall_ratio": t_ens.wall / t_plain.wall, "forward_cpu_ratio": t_ens.cpu / t_plain.cpu,
            "eval_wall_ratio": wall_ens / wall_plain, "forward_wall_s": [t_plain.wall, t_ens.wall],
            "forward_cpu_s": [t_plain.cpu, t_ens.cpu], "eval_wall_s": [wall_plain, wall_ens]}
    print(f"COST forward wall x{cost['forward_wall_ratio']:.2f} ({t_plain.wall:.1f} s -> {t_ens.wall:.1f} s), "
          f"forward CPU x{cost['forward_cpu_ratio']:.2f}, whole eval (with baselines) x{cost['eval_wall_ratio']:.2f}")
    record = {"benchmark": "self_ensemble", "machine": machine, "model": plain["model"],
              "model_sha256": plain["model_sha256"], "max_images": args.max_images, "results": rows, "cost": cost}
    write_json(args.json, record)
    return record


if __name__ == "__main__":
    main()
