"""How long the backup generator takes to render one proof (both sides, print-size PNGs).

    .venv/bin/python benchmarks/proof_rendering.py
    .venv/bin/python benchmarks/proof_rendering.py --proofs 20 --size A6 --palette

One renderer renders ``--proofs`` proofs in a row, each for another recipient, after a first
render that loads and caches the fonts. Prints the time per proof (mean, median, slowest)
and proofs/s for one process.
"""

from __future__ import annotations

import argparse
import statistics
import time

from mail_pipeline.integrations.renderer.backup import BackupRenderer
from mail_pipeline.integrations.renderer.models import PRINT_SIZES, PostcardDesign, ProofRequest

DESIGN = {
    "template": "classic",
    "brand_name": "Northwind Coffee",
    "headline": "{first_name}, your autumn treat is waiting",
    "body": "Come back this month and enjoy 20% off any bag of our seasonal roasts.",
    "offer_code": "AUTUMN20",
    "background_color": "#fdf6ec",
    "accent_color": "#b4532a",
    "back_message": "Hi {first_name|there},\nwe saved you a bag.",
}
FIRST_NAMES = ["Jane", "John", "Ava", "Liam", "Maya", "Noah", "Zoe", "Ethan"]


def proof_request(n: int, size: str) -> ProofRequest:
    return ProofRequest(
        recipient_id=n,
        campaign_id=1,
        design=PostcardDesign.from_mapping({**DESIGN, "size": size}),
        address_lines=(f"{n} Main Street",),
        city="Springfield",
        postal_code="62701",
        country="US",
        region="IL",
        first_name=FIRST_NAMES[n % len(FIRST_NAMES)],
        last_name="Doe",
    )


def run(proofs: int, size: str, antialias: bool) -> list[float]:
    """Seconds per proof, one entry per proof after the warm-up render."""
    renderer = BackupRenderer(antialias=antialias)
    renderer.render(proof_request(0, size))  # fonts loaded and cached
    timings = []
    for n in range(1, proofs + 1):
        started = time.perf_counter()
        renderer.render(proof_request(n, size))
        timings.append(time.perf_counter() - started)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--proofs", type=int, default=10)
    parser.add_argument("--size", choices=sorted(PRINT_SIZES), default="4x6")
    parser.add_argument(
        "--palette", action="store_true", help="no anti-aliasing (what the sandboxes use)"
    )
    args = parser.parse_args()
    timings = run(args.proofs, args.size, antialias=not args.palette)
    mean = statistics.fmean(timings)
    mode = "palette" if args.palette else "RGB"
    print(
        f"{len(timings)} proofs ({args.size}, {mode}): {mean * 1000:.0f} ms mean, "
        f"{statistics.median(timings) * 1000:.0f} ms median, {max(timings) * 1000:.0f} ms "
        f"slowest per proof; {1 / mean:.1f} proofs/s in one process"
    )


if __name__ == "__main__":
    main()
