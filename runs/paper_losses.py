"""Check every loss of the papers and export them as one PyTorch module.

    python runs/paper_losses.py --out out/paper_losses

Writes OUT/paper_losses.py (import it with torch alone), OUT/paper_losses.json
(the genome as formula text) and OUT/checks.json (each stage's verdict).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gp_loss.cli.check_cmd import check_branch  # noqa: E402
from gp_loss.errors import GpLossError  # noqa: E402
from gp_loss.evolution.script import run_script  # noqa: E402
from gp_loss.export import export_torch, to_latex  # noqa: E402
from gp_loss.runtime.atomic import write_text_atomic  # noqa: E402
from gp_loss.language import Genome  # noqa: E402
from gp_loss.paper_losses import PAPER_LOSSES  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/paper_losses", help="output directory")
    args = parser.parse_args()
    if not str(args.out).strip():
        print("error: --out is empty: give an output directory, e.g. --out out/paper_losses", file=sys.stderr)
        return 2
    genome = Genome.from_formulas((name, p.kind, p.formula) for name, p in PAPER_LOSSES.items())
    checks = {}
    for b in genome:
        stages = check_branch(b)
        checks[b.name] = [s.to_dict() for s in stages]
        verdict = "pass" if all(s.passed for s in stages) else "REJECT: " + stages[-1].reason
        print(f"{b.name:<20} {b.kind.name:<5} {verdict:<8} {to_latex(b.kind, b.tree)}")
    out = Path(args.out)
    try:
        for name, text in (("paper_losses.py", export_torch(genome, header="The losses of the papers.")),
                           ("paper_losses.json", genome.to_json()), ("checks.json", json.dumps(checks, indent=2))):
            write_text_atomic(out / name, text)
    except (OSError, GpLossError) as err:
        print(f"error: {err}; choose another --out", file=sys.stderr)
        return 2
    print(f"wrote {out}/paper_losses.py, paper_losses.json, checks.json")
    return 0


if __name__ == "__main__":
    run_script(main)
