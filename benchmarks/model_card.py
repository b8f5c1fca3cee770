"""Write an embedded model's card (srgan/weights/<name>.md) from what the run recorded.

Nothing in a card is typed by hand: the training summary comes from the model file's
metadata, the learning curve from the run's metrics.jsonl, the scores from the
`srgan eval --json` report next to the weights.

    python benchmarks/model_card.py photo-x4 --run ~/srgan-runs/photo-x4 --recipe "bash benchmarks/train_defaults.sh photo-x4"
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from srgan.checkpoint import WEIGHTS_DIR, read_model_info
from srgan.evaluate import markdown
from srgan.models import Generator, count_parameters
from srgan.pretrained import MODELS


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def learning_curve(metrics_path: Path) -> list[dict]:
    rows = []
    for line in metrics_path.read_text().splitlines():
        row = json.loads(line)
        if "val_psnr" in row:
            rows.append(row)
    return rows


def card(name: str, run: Path, recipe: str, hardware: str, note: str = "") -> str:
    path = WEIGHTS_DIR / f"{name}.safetensors"
    info = read_model_info(path)
    t = info.training
    cfg = info.config
    params = count_parameters(Generator(cfg))
    lines = [
        f"# {name}",
        "",
        MODELS.get(name, {}).get("summary", ""),
        "",
        "## Model",
        "",
        f"- Architecture: SRResNet generator, x{cfg.scale}, {cfg.blocks} residual blocks, {cfg.channels} channels, "
        f"{'with' if cfg.batch_norm else 'without'} BatchNorm, {cfg.in_channels} channel(s) in/out; {params:,} parameters.",
        f"- Input normalisation: `{info.normalization.kind}`"
        + (f" (asinh, softening {info.normalization.softening} noise sigmas)" if info.normalization.kind == "asinh" else
           " (RGB in [0, 1])") + f"; degradation preset `{info.preset}`.",
        f"- File: `srgan/weights/{name}.safetensors`, sha256 `{info.sha256}`.",
        "",
        "## Training",
        "",
        f"- Data: {MODELS.get(name, {}).get('data', t.get('data'))} ({t.get('images')} images of at least the patch size; "
        f"{t.get('validation_images')} validation images).",
        f"- Steps: {t.get('steps')} pixel-loss steps of a planned {t.get('pretrain_steps')} "
        f"(GAN steps: {t.get('gan_steps')}); batch {t.get('batch_size')}, HR patch {t.get('patch_size')} px, "
        f"Adam lr {t.get('lr')} with a {t.get('schedule')} schedule, seed {t.get('seed')}.",
        f"- Hardware: {hardware}; device `{t.get('device')}`, bf16 autocast {'on' if t.get('amp') else 'off'}. "
        f"Wall time {_duration(t.get('wall_time_s', 0))} (measured by the trainer, including validation).",
        f"- Recipe (resumable; rerun to continue): `{recipe}`",
        "",
        "## Learning curve (validation PSNR vs steps)",
        "",
        "| step | model PSNR (dB) | bicubic PSNR (dB) | model SSIM | bicubic SSIM |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in learning_curve(run / "metrics.jsonl"):
        lines.append(f"| {row['step']} | {row['val_psnr']:.2f} | {row['val_psnr_bicubic']:.2f} | "
                     f"{row['val_ssim']:.4f} | {row['val_ssim_bicubic']:.4f} |")
    lines += ["", "## Evaluation", ""]
    eval_json = WEIGHTS_DIR / f"{name}.eval.json"
    if eval_json.is_file():
        lines.append(markdown(json.loads(eval_json.read_text())))
    else:
        lines.append("Not evaluated yet.")
    if note:
        lines += ["", "## Status and caveats", "", note]
    return "\n".join(lines) + "\n"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    p.add_argument("--run", type=Path, required=True, help="the training run folder (metrics.jsonl)")
    p.add_argument("--recipe", required=True, help="the command that (re)trains the model")
    p.add_argument("--hardware", default=None, help="where it was trained (default: this machine's CPU)")
    p.add_argument("--note", default="", help="status and caveats, in words")
    a = p.parse_args()
    hardware = a.hardware or f"{cpu_name()} ({__import__('os').cpu_count()} cores, shared with other work)"
    text = card(a.name, a.run, a.recipe, hardware, a.note)
    (WEIGHTS_DIR / f"{a.name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
