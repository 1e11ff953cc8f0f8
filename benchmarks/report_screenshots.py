"""Screenshots of report pages (python -m multidiff.report) for the docs: docs/report_audio.png,
docs/report_points.png, docs/report_molecules.png and, given a mesh=true sample folder, docs/report_meshes.png,
each the top of the page as headless Chromium draws it.

Sources: the audio page is the report of a real training run with samples (default runs/distill_fsdd); the molecule
page that of a real training run whose sample folders hold SDFs (default runs/eb_mol_graph: curves, then its
quality/*/ sample folders); the point-cloud page that of a real point-cloud run with samples (default
runs/airplane_cpu), or, when that folder holds no PLY, of a folder of real ShapeNet airplanes from the shared
dataset's test split written as PLYs.

python benchmarks/report_screenshots.py [--audio RUN] [--points RUN] [--molecules RUN] [--shapenet DIR] [--out docs]

Needs Chromium (CHROMIUM=/path, default /usr/bin/chromium) and the playwright package.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from multidiff.report import write_report  # noqa: E402
from multidiff.report.browser import headless_chromium  # noqa: E402


def airplanes(shapenet: Path, out: Path, n: int = 8) -> Path:
    """``n`` ShapeNet airplanes of the test split (sorted by name) as PLY files in ``out``, as a sample folder holds
    them (no sampling.json: they were not sampled)."""
    from multidiff.domains.pointcloud.io import read_points, write_ply

    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(shapenet.glob("*.npy"))[:n]:
        write_ply(out / f"{path.stem[:8]}.ply", read_points(path))
    return out


def screenshot(browser, html: Path, png: Path, height: int) -> None:
    """The top ``height`` px of ``html`` (all of it when shorter) at 1280 px wide, once every viewer has drawn; a JS
    error is an error here."""
    page = browser.new_page(viewport={"width": 1280, "height": 1200})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.goto(html.as_uri())
    page.wait_for_function(
        """() => window.reportErrors.length > 0 || (
            window.reportViewers.length >= document.querySelectorAll('[data-viewer-id]').length
            && [...document.querySelectorAll('audio')].every(a => a.readyState >= 1))""",
        timeout=120_000,
    )
    if errors:
        raise RuntimeError(f"{html}: {errors}")
    page.wait_for_timeout(300)  # the last frame presented
    tall = page.evaluate("document.documentElement.scrollHeight")
    page.screenshot(path=str(png), full_page=True, clip={"x": 0, "y": 0, "width": 1280, "height": min(height, tall)})
    page.close()
    print(f"wrote {png}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio", type=Path, default=ROOT / "runs" / "distill_fsdd")
    ap.add_argument("--points", type=Path, default=ROOT / "runs" / "airplane_cpu")
    ap.add_argument("--molecules", type=Path, default=ROOT / "runs" / "eb_mol_graph")
    ap.add_argument(
        "--meshes", type=Path, default=ROOT / "runs" / "airplane_cpu" / "sampled_mesh", help="a mesh=true sample folder"
    )
    shared = Path(os.environ.get("MULTIDIFF_SHARED", ROOT.parent / "shared")) / "datasets"
    ap.add_argument("--shapenet", type=Path, default=shared / "shapenet_airplane" / "02691156" / "test")
    ap.add_argument("--out", type=Path, default=ROOT / "docs")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp, headless_chromium() as browser:
        tmp = Path(tmp)
        points = args.points
        if not any(points.glob("**/*.ply")):
            print(f"{points}: no PLY files; the point-cloud page shows ShapeNet airplanes from {args.shapenet}")
            points = airplanes(args.shapenet, tmp / "shapenet_airplanes")
        pages = [
            ("audio", write_report(args.audio, tmp / "audio.html"), 2000),
            ("points", write_report(points, tmp / "points.html"), 2300),
            ("molecules", write_report(args.molecules, tmp / "molecules.html"), 2000),
        ]
        if any(args.meshes.glob("*.mesh.ply")):
            pages.append(("meshes", write_report(args.meshes, tmp / "meshes.html"), 1300))
        for name, html, height in pages:
            screenshot(browser, html, args.out / f"report_{name}.png", height)


if __name__ == "__main__":
    main()
