"""One GPU session's measurements in one call (issue 17): tests, throughput, profile, engine
levers, a folder through the batch runner, training speed and its levers.

Each stage runs in its own process with its own time limit, in the order below (most
important first); one that fails or runs out of time is recorded with its error and the rest
go on. A stage starts only while at least ``MIN_STAGE_S`` of ``--budget`` are left, and gets at
most what is left. After every stage ``OUT/gpu_run.json`` is rewritten with every stage's
figures (the scripts' own JSON records, partial ones too for a stage cut short) and the
device's name; ``OUT/gpu_run.log`` has every stage's full output. The last lines printed are
a summary of the headline figures.

  tests            the test suite's GPU tests: ``pytest -m gpu`` when setup.cfg or
                   pyproject.toml registers a ``gpu`` marker, else ``pytest -k cuda``
  throughput       throughput.py at 2048^2 and 4096^2: whole image, engine, one-tile loop
  levers           gpu_levers.py at 2048^2: tile, batch, precision, layout, cuDNN autotuning,
                   host/device copy modes, each against the defaults
  profile          profile_forward.py --engine: one engine pass at 2048^2 under torch.profiler
  train            train_speed.py at 16x96 and 64x128 as fit trains (the "before" figures)
  train_levers     train_speed.py --ladder at 64x128: log every 20 steps, sync-free
                   degradation, fused Adam, CUDA graph, torch.compile
  batch            batch_speed.py: 6 PNGs of 2048^2 through the batch runner with 1, 2 and 4
                   I/O workers against the engine's pure rate
  levers_compile   gpu_levers.py, torch.compile default, reduce-overhead, max-autotune (last:
                   compile times are the least predictable)

    bash benchmarks/gpu_run.sh                     # on the GPU machine (installs .whl/ first)
    python benchmarks/gpu_run.py --only levers,levers_compile --budget 300
    python benchmarks/gpu_run.py --smoke           # every stage, tiny, on the CPU
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
BUDGET_S = 480.0
MIN_STAGE_S = 20.0  # no stage starts with less than this left
HEADLINES = ("RATIO ", "LEVER ", "TRAIN ", "BATCH ", "PROFILE ", "machine: ")
PYTEST_TOTALS = re.compile(r"\d+ (passed|failed|skipped|deselected|errors?)\b.* in [\d.]+s")


@dataclass(frozen=True)
class Stage:
    """One measurement: a script (``kind`` "script", given ``--json FILE``) or pytest
    (``kind`` "pytest", given ``--junitxml FILE``), run as ``python ARGV...``."""

    name: str
    argv: tuple[str, ...]
    cap_s: float  # at most this long, even with more budget left
    kind: str = "script"


def gpu_marker_registered(root: Path = ROOT) -> bool:
    """Whether the project's pytest configuration (setup.cfg or pyproject.toml) declares a ``gpu`` marker."""
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    lines = cfg.get("tool:pytest", "markers", fallback="").splitlines()
    pyproject = root / "pyproject.toml"
    if pyproject.exists():
        import tomllib

        options = tomllib.loads(pyproject.read_text()).get("tool", {}).get("pytest", {}).get("ini_options", {})
        lines += options.get("markers", [])
    return any(line.strip().split(":")[0].strip() == "gpu" for line in lines)


def stages(smoke: bool, device: str) -> list[Stage]:
    """The stages in running order; ``smoke``: the same stages, tiny, each in seconds."""
    py = lambda name: str(BENCH / name)  # noqa: E731
    select = ("-m", "gpu") if gpu_marker_registered() else ("-k", "cuda")
    tests = ("tests/test_degrade.py",) if smoke else ()
    pytest = ("-m", "pytest", *tests, *select, "-q", "-p", "no:cacheprovider", "--continue-on-collection-errors")
    dev = ("--device", device)
    if smoke:
        s = ("--smoke", *dev)
        return [
            Stage("tests", pytest, 60, kind="pytest"),
            Stage("throughput", (py("throughput.py"), *s, "--no-levers"), 60),
            Stage("levers", (py("gpu_levers.py"), *s, "--skip-compile"), 60),
            Stage("profile", (py("profile_forward.py"), *s, "--engine"), 60),
            Stage("train", (py("train_speed.py"), *s), 60),
            Stage("train_levers", (py("train_speed.py"), *s, "--ladder"), 60),
            Stage("batch", (py("batch_speed.py"), *s), 60),
            Stage("levers_compile", (py("gpu_levers.py"), *s, "--only", "compile,compile-reduce-overhead,"
                                     "compile-max-autotune"), 60),
        ]
    return [
        Stage("tests", pytest, 60, kind="pytest"),
        Stage("throughput", (py("throughput.py"), *dev, "--sizes", "2048,4096", "--no-levers", "--repeats", "3",
                             "--budget", "20"), 90),
        Stage("levers", (py("gpu_levers.py"), *dev, "--size", "2048", "--skip-compile", "--budget", "40"), 90),
        Stage("profile", (py("profile_forward.py"), *dev, "--engine", "--size", "2048", "--rows", "25"), 45),
        Stage("train", (py("train_speed.py"), *dev, "--configs", "16x96,64x128", "--steps", "20", "--warmup", "3"),
              60),
        Stage("train_levers", (py("train_speed.py"), *dev, "--configs", "64x128", "--ladder", "--steps", "30",
                               "--warmup", "3"), 120),
        Stage("batch", (py("batch_speed.py"), *dev, "--size", "2048", "--count", "6", "--workers", "1,2,4"), 75),
        Stage("levers_compile", (py("gpu_levers.py"), *dev, "--size", "2048", "--budget", "20", "--only",
                                 "compile,compile-reduce-overhead,compile-max-autotune"), 240),
    ]


# ----------------------------------------------------------------------------- running a stage


def _tail(text: str, lines: int) -> list[str]:
    return [line for line in text.splitlines() if line.strip()][-lines:]


def junit_counts(path: Path) -> dict:
    """Totals and failing test names from a pytest --junitxml file."""
    root = ET.parse(path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    n = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failing = []
    for case in suite.iter("testcase"):
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        if bad is not None:
            message = (bad.get("message") or "").strip().splitlines()
            failing.append({"test": f"{case.get('classname')}::{case.get('name')}",
                            "message": message[0][:300] if message else ""})
    return {**n, "passed": n["tests"] - n["failures"] - n["errors"] - n["skipped"],
            "seconds": float(suite.get("time", 0.0)), "failing": failing}


def run_stage(stage: Stage, limit_s: float, workdir: Path, python: str = sys.executable, env=None) -> dict:
    """Run one stage for at most ``limit_s`` seconds (then its whole process group is killed).

    Returns its entry for gpu_run.json: status "ok", "failed" (tests failed), "error" (exit
    status not 0: ``error`` is the last line of its output) or "timeout"; ``record`` is the
    stage's JSON (partial for scripts that rewrite it as they go) or test counts; ``log`` the
    whole output.
    """
    result_file = workdir / f"{stage.name}.{'xml' if stage.kind == 'pytest' else 'json'}"
    result_file.unlink(missing_ok=True)
    flag = "--junitxml" if stage.kind == "pytest" else "--json"
    argv = [python, *stage.argv, flag, str(result_file)]
    log_file = workdir / f"{stage.name}.log"
    t0 = time.perf_counter()
    with open(log_file, "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env,
                                start_new_session=True)  # its own process group: compile workers die with it
        try:
            rc = proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    seconds = time.perf_counter() - t0
    text = log_file.read_text(errors="replace")
    entry = {"name": stage.name, "command": " ".join(["python", *stage.argv]), "limit_s": round(limit_s, 1),
             "seconds": round(seconds, 2), "returncode": rc}
    record, read_error = None, None
    if result_file.exists():
        try:
            record = junit_counts(result_file) if stage.kind == "pytest" else json.loads(result_file.read_text())
        except (ValueError, ET.ParseError) as e:
            read_error = f"unreadable {result_file.name}: {e}"
    if stage.kind == "pytest" and rc == 5:  # pytest: nothing selected
        record = record or {"tests": 0}
        entry["note"] = "no tests selected"
    if rc is None:
        entry.update(status="timeout", error=f"stopped after {limit_s:.0f} s (time limit)")
    elif rc == 0 or (stage.kind == "pytest" and rc == 5):
        entry["status"] = "ok"
    elif stage.kind == "pytest" and rc == 1 and record is not None:
        entry.update(status="failed", error=f"{record['failures'] + record['errors']} test(s) failed")
    else:
        entry.update(status="error", error=(_tail(text, 1) or [f"exit status {rc}, no output"])[0][:500])
    if read_error:
        entry["read_error"] = read_error
    entry["record"] = record
    entry["log"] = text[-200_000:]
    return entry


# ----------------------------------------------------------------------------- summary


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, (dict, list)):
            return None
        try:
            d = d[k]
        except (KeyError, IndexError, TypeError):
            return None
    return d


def _f(v, fmt=".3g") -> str:
    return "-" if v is None else format(v, fmt)


def summary_lines(entries: list[dict]) -> list[str]:
    """Headline figures of whatever finished, one line each."""
    lines = []
    for e in entries:
        rec, name = e.get("record"), e["name"]
        head = f"{name:>14} {e['status']:>7} {e.get('seconds', 0):>6.0f} s"
        if e["status"] == "skipped" or rec is None:
            lines.append(f"{head}  {e.get('error', '')}")
            continue
        if name == "tests":
            lines.append(f"{head}  {rec.get('tests', 0)} selected: {rec.get('passed', 0)} passed, "
                         f"{rec.get('failures', 0) + rec.get('errors', 0)} failed, {rec.get('skipped', 0)} skipped")
        elif rec.get("benchmark") == "throughput":
            rows = {(r["size"], r["variant"]): r for r in rec.get("results", [])}
            for r in rec.get("ratios", []):
                s = r["size"]
                lines.append(f"{head}  {s}^2: engine {_f(_get(rows, (s, 'engine'), 'mpix_per_s'))} MPix/s, "
                             f"one-tile {_f(_get(rows, (s, 'one-tile'), 'mpix_per_s'))}, whole "
                             f"{_f(_get(rows, (s, 'whole'), 'mpix_per_s'))}; engine/one-tile "
                             f"{_f(r.get('engine_over_one_tile'))}, {_f(100 * r['fraction_of_peak'] if 'fraction_of_peak' in r else None)}% of peak")
        elif rec.get("benchmark") == "gpu_levers":
            for r in rec.get("levers", []):
                if "error" in r:
                    lines.append(f"{head}  {r['label']}: error {r['error'][:100]}")
                else:
                    lines.append(f"{head}  {r['label']}: {_f(r['mpix_per_s'])} MPix/s, x{_f(r['speedup'], '.2f')} "
                                 f"defaults, x{_f(r.get('over_one_tile'), '.2f')} one-tile, PSNR "
                                 f"{'same' if r['psnr_db'] is None else _f(r['psnr_db'], '.1f')}, first call "
                                 f"{_f(r['first_call_s'], '.1f')} s")
        elif rec.get("benchmark") == "profile_forward":
            top = ", ".join(f"{t['name']} {t['self_time_us'] / 1e3:.1f} ms" for t in rec.get("top", [])[:3])
            lines.append(f"{head}  device busy {_f(_get(rec, 'busy', 'busy_fraction'), '.2f')} of "
                         f"{_f(_get(rec, 'busy', 'span_s'), '.3f')} s; top: {top}")
        elif rec.get("benchmark") == "train_speed":
            for r in rec.get("results", []):
                what = f"{r['batch']}x{r['patch']} {r['phase']} [{r['setting']}]"
                if "error" in r:
                    lines.append(f"{head}  {what}: error {r['error'][:100]}")
                else:
                    lines.append(f"{head}  {what}: {_f(r['steps_per_s'])} steps/s, busy "
                                 f"{_f(r.get('profiler_busy_fraction'), '.2f')}, syncs {r.get('host_syncs_per_step')}")
        elif rec.get("benchmark") == "batch_speed":
            for r in rec.get("runs", []):
                lines.append(f"{head}  workers {r['workers']}: {_f(r['images_per_s'])} images/s vs engine "
                             f"{_f(rec['engine_images_per_s'])}, idle {_f(r['idle_fraction'], '.2f')}")
        else:
            lines.append(f"{head}  {e.get('error', '')}")
        if e["status"] not in ("ok",) and e.get("error") and lines and not lines[-1].endswith(e["error"]):
            lines.append(f"{head}  {e['error'][:200]}")
    return lines


# ----------------------------------------------------------------------------- main


def device_name(device: str) -> str:
    """The GPU's name, or "cpu: MODEL", as the scripts write it."""
    import torch

    sys.path.insert(0, str(BENCH))
    from throughput import machine_info

    info = machine_info(torch.device(device))
    return info["gpu"] or f"cpu: {info['cpu']}"


def write_record(path: Path, record: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="folder for gpu_run.json and gpu_run.log [default: $OUT, else runs/gpu]")
    p.add_argument("--budget", type=float, default=BUDGET_S, help=f"seconds for all stages [default: {BUDGET_S:.0f}]")
    p.add_argument("--only", default="", help="stage names, comma-separated [default: all]")
    p.add_argument("--skip", default="", help="stage names to leave out, comma-separated")
    p.add_argument("--device", default=None, help="for every stage [default: cuda; smoke: cpu]")
    p.add_argument("--smoke", action="store_true", help="every stage tiny, on the CPU: checks the run end to end")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_start = time.perf_counter()
    device = args.device or ("cpu" if args.smoke else "cuda")
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("gpu_run: no CUDA GPU here; use --smoke (or --device cpu for the full CPU run)")
    out = Path(args.out or os.environ.get("OUT") or ROOT / "runs" / "gpu")
    out.mkdir(parents=True, exist_ok=True)
    plan = stages(args.smoke, device)
    names = [s.name for s in plan]
    only, skip = ({n for n in a.split(",") if n} for a in (args.only, args.skip))
    if (only | skip) - set(names):
        raise SystemExit(f"gpu_run: unknown stage(s) {sorted((only | skip) - set(names))}; stages: {', '.join(names)}")
    plan = [s for s in plan if (not only or s.name in only) and s.name not in skip]
    name = device_name(device)
    record = {"benchmark": "gpu_run", "device": name, "smoke": args.smoke, "budget_s": args.budget,
              "python": sys.executable, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "stages": [],
              "summary": []}
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    print(f"gpu_run: device {name}; {len(plan)} stages, budget {args.budget:.0f} s; writing {out}/gpu_run.json",
          flush=True)
    log_path, json_path = out / "gpu_run.log", out / "gpu_run.json"
    with tempfile.TemporaryDirectory(prefix="srgan-gpu-run-") as tmp, open(log_path, "w") as log:
        for stage in plan:
            left = args.budget - (time.perf_counter() - t_start)
            if left < MIN_STAGE_S:
                entry = {"name": stage.name, "status": "skipped", "seconds": 0,
                         "error": f"budget: {max(left, 0):.0f} s left, a stage needs {MIN_STAGE_S:.0f} s", "record": None}
            else:
                limit = min(stage.cap_s, left)
                print(f"\n== {stage.name} (at most {limit:.0f} s): python {' '.join(stage.argv)}", flush=True)
                entry = run_stage(stage, limit, Path(tmp), env=env)
                log.write(f"\n===== {stage.name}: {entry['command']}\n{entry['log']}\n===== {stage.name}: "
                          f"{entry['status']} in {entry['seconds']} s\n")
                log.flush()
                for line in entry["log"].splitlines():
                    if line.startswith(HEADLINES) or (stage.kind == "pytest" and PYTEST_TOTALS.search(line)):
                        print(f"   {line}")
                print(f"-> {stage.name}: {entry['status']} in {entry['seconds']:.0f} s"
                      + (f" ({entry['error']})" if entry.get("error") else ""), flush=True)
            entry["device"] = name
            if isinstance(entry.get("record"), dict):
                entry["record"].setdefault("device", name)
            record["stages"].append(entry)
            record["summary"] = summary_lines(record["stages"])
            record["seconds"] = round(time.perf_counter() - t_start, 1)
            write_record(json_path, record)
    print(f"\nSUMMARY ({name}, {record['seconds']:.0f} s; full figures in {json_path}, output in {log_path})")
    for line in record["summary"]:
        print(line)
    return record


if __name__ == "__main__":
    main()
