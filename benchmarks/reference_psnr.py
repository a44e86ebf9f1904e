"""Published-PSNR reproduction: the real IMDN / PAN teachers on Set5 and Set14, both Y conventions.

Runs `python -m qdukd.eval` for every teacher in ../shared/data/teachers and prints a markdown
table next to the published figures; JSON per run goes to benchmarks/results/reference/.

Usage:
    python benchmarks/reference_psnr.py
"""

from __future__ import annotations

import json

from common import RESULTS, SHARED, machine
from qdukd.atomic import write_json
from qdukd.eval import main as eval_main

# PAN: its own test logs; IMDN: its paper (Table 3; x3 from the same table).
PUBLISHED = {("pan", 2): (38.0007, 33.5927), ("pan", 3): (34.4003, 30.3553), ("pan", 4): (32.1311, 28.6107),
             ("imdn", 2): (38.00, 33.63), ("imdn", 4): (32.21, 28.58)}


def main() -> None:
    out_dir = RESULTS / "reference"
    rows = ["| model | scale | convention | Set5 PSNR_Y / SSIM_Y | Set14 PSNR_Y / SSIM_Y | published Set5 / Set14 |",
            "|---|---|---|---|---|---|"]
    summary = []
    for model in ("pan", "imdn"):
        for scale in (2, 3, 4):
            for convention in ("float", "uint8"):
                out = out_dir / f"{model}_x{scale}_{convention}.json"
                eval_main(["--model", model, "--scale", str(scale),
                           "--weights", str(SHARED / "teachers" / f"{model.upper()}_x{scale}.pth"),
                           "--data", str(SHARED / "benchmarks" / "Set5"), str(SHARED / "benchmarks" / "Set14"),
                           "--ycbcr", convention, "--json", str(out)])
                sets = {s["name"]: s for s in json.loads(out.read_text())["sets"]}
                pub = PUBLISHED.get((model, scale))
                pub_text = f"{pub[0]} / {pub[1]}" if pub and convention == "float" else ""
                rows.append(f"| {model} | x{scale} | {convention} | {sets['Set5']['psnr_y']:.4f} / "
                            f"{sets['Set5']['ssim_y']:.4f} | {sets['Set14']['psnr_y']:.4f} / "
                            f"{sets['Set14']['ssim_y']:.4f} | {pub_text} |")
                summary.append({"model": model, "scale": scale, "convention": convention,
                                "set5": sets["Set5"]["psnr_y"], "set14": sets["Set14"]["psnr_y"]})
    print("\n".join(rows))
    write_json(out_dir / "summary.json", {"rows": summary, "machine": machine()})


if __name__ == "__main__":
    main()
