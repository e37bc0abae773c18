"""Agreement of fd_fmnist (and kid_fmnist) with Inception FID across benchmark cells: Spearman's rank correlation.

Full size (issue 17; a GPU, or about half an hour on a 2-core CPU with AMX with both networks in bf16):

    python scripts/fd_vs_fid.py --model fmnist-p1 --num-samples 2000 [--precision auto --fid-precision bfloat16]

Reduced, as measured on the shared CPU (see the README):

    python scripts/fd_vs_fid.py --model M.pt --num-samples 400 --fid-ref test2000.npz --device cpu

Runs one `diffsampler benchmark` over solvers x NFE with the metrics fid, fd_fmnist and kid_fmnist, so
every metric scores the same samples; the run resumes when restarted, and a rerun with more --metrics
adds them from the same seeded latents (the same samples on the same machine). Then writes OUT/NAME/agreement.json
and agreement.md: the table of the cells and Spearman's rho (scipy.stats.spearmanr) of each metric against FID.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml
from scipy.stats import spearmanr

METRICS = ("fid", "fd_fmnist", "kid_fmnist")


def run_benchmark(args: argparse.Namespace, folder: Path) -> None:
    """The benchmark of every (solver, NFE) cell with the three metrics (resumes an interrupted run)."""
    refs = {"fid": args.fid_ref, "fd_fmnist": args.fd_ref, "kid_fmnist": args.fd_ref}
    options = {m: {"ref": refs[m], **({"cache_dir": args.cache_dir} if args.cache_dir else {})} for m in args.metrics}
    if "fid" in options:
        options["fid"]["precision"] = args.fid_precision
    config = {
        "model": args.model,
        "nfe": args.nfe,
        "num_samples": args.num_samples,
        "batch_size": args.batch_size,
        "seed": 0,
        "precision": args.precision,
        "metrics": args.metrics,
        "metric_options": options,
        "solvers": args.solvers,
        "name": args.name,
        "out": args.out,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder.parent / f"{args.name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cmd = [
        sys.executable,
        "-m",
        "diffsampler",
        "benchmark",
        "-c",
        str(folder.parent / f"{args.name}.yaml"),
        "--device",
        args.device,
    ]
    subprocess.run(cmd, check=True)


def agreement(folder: Path) -> dict:
    """Per-cell values of the metrics from the run's records, and Spearman's rho of each against FID."""
    cells: dict[tuple[str, int], dict[str, float]] = {}
    for path in sorted((folder / "records").rglob("*.json")):
        record = json.loads(path.read_text())
        if record["value"] is not None:
            cells.setdefault((record["label"], record["nfe"]), {})[record["metric"]] = record["value"]
    complete = {k: v for k, v in sorted(cells.items()) if all(m in v for m in METRICS)}
    fid = [v["fid"] for v in complete.values()]
    rho = {m: float(spearmanr(fid, [v[m] for v in complete.values()]).statistic) for m in METRICS[1:]}
    rows = [{"solver": k[0], "nfe": k[1], **v} for k, v in complete.items()]
    return {"cells": len(rows), "spearman_vs_fid": rho, "rows": rows}


def markdown(result: dict, args: argparse.Namespace) -> str:
    lines = [
        (
            f"{result['cells']} cells, {args.num_samples} samples each, model {args.model}; "
            f"FID reference {args.fid_ref}, "
            f"fd_fmnist/kid_fmnist reference {args.fd_ref}."
        ),
        "",
        "| solver | NFE | FID | fd_fmnist | kid_fmnist |",
        "|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['solver']} | {row['nfe']} | {row['fid']:.2f} | {row['fd_fmnist']:.3f} | {row['kid_fmnist']:.5f} |"
        )
    rho = result["spearman_vs_fid"]
    lines += ["", f"Spearman rho vs FID: fd_fmnist {rho['fd_fmnist']:.3f}, kid_fmnist {rho['kid_fmnist']:.3f}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--solvers", type=lambda s: s.split(","), default=["euler", "dpmpp", "unipc", "ipndm"])
    parser.add_argument("--nfe", type=lambda s: [int(v) for v in s.split(",")], default=[3, 4, 6, 10])
    parser.add_argument("--num-samples", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--fid-ref", default="fashion-mnist:train")
    parser.add_argument("--fd-ref", default="fashion-mnist:train")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="float32", help="the model's network: float32, bfloat16 or auto")
    parser.add_argument("--fid-precision", default="float32", help="Inception's: float32 (clean) or bfloat16")
    parser.add_argument("--out", default="results")
    parser.add_argument("--name", default="fd-vs-fid")
    parser.add_argument(
        "--metrics",
        type=lambda s: s.split(","),
        default=list(METRICS),
        help="a subset scores only those (a rerun with more adds them, from the same latents)",
    )
    args = parser.parse_args()
    folder = Path(args.out) / args.name
    run_benchmark(args, folder)
    result = agreement(folder)
    (folder / "agreement.json").write_text(json.dumps(result, indent=2) + "\n")
    (folder / "agreement.md").write_text(markdown(result, args))
    print(markdown(result, args))


if __name__ == "__main__":
    main()
