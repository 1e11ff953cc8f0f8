"""The report page: header, commands, curves, metrics and samples of a folder (:func:`~.discover.discover`), one
self-contained HTML document with its media, data, style, script and only the viewer libraries it uses inlined."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

from .audio import audio_html
from .commands import sample_command, train_command
from .curves import curves_html, last_values_html, read_metrics
from .discover import Contents, SampleSet
from .jsonfiles import json_files_html, json_table
from .markup import esc
from .molecules import molecules_html, sdf_records
from .points import points_html
from .vendor import VENDORED, asset, inline_script, vendored

#: a run's full config is shown (folded) up to this size
MAX_CONFIG_CHARS = 200_000


def _slug(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9]+", "-", text).strip("-").lower() or "x"


def _command_html(contents: Contents) -> str:
    if contents.overrides is None:
        return ""
    parts = [
        "<h2>Command</h2>",
        f'<pre class="command">{esc(train_command(contents.overrides))}</pre>',
        '<p class="note">From <code>.hydra/overrides.yaml</code>, run from the repository root.</p>',
    ]
    if contents.config is not None:
        text = contents.config.read_text(errors="replace")
        if len(text) <= MAX_CONFIG_CHARS:
            parts.append(
                f'<details><summary>the composed config (<code>.hydra/config.yaml</code>)</summary><pre class="config">'
                f"{esc(text)}</pre></details>"
            )
    return "".join(parts)


def _curves_html(contents: Contents) -> str:
    if contents.metrics_csv is None:
        return ""
    series = read_metrics(contents.metrics_csv)
    rel = contents.metrics_csv.relative_to(contents.root)
    if not series:
        return f'<h2>Curves</h2><p class="note"><code>{esc(rel)}</code> holds no logged values yet.</p>'
    return (
        f'<h2>Curves</h2><p class="note">From <code>{esc(rel)}</code> (Lightning\'s CSVLogger); hover a line for '
        f'its name.</p><div class="curves">{curves_html(series)}</div>'
        f"<details{' open' if len(series) <= 12 else ''}><summary>last logged values ({len(series)} metrics)</summary>"
        f"{last_values_html(series)}</details>"
    )


def _sample_set_html(s: SampleSet, root: Path, needs: set[str]) -> str:
    set_id = _slug(str(s.folder.relative_to(root))) if s.folder != root else "here"  # unique: folders differ
    rel = "." if s.folder == root else str(s.folder.relative_to(root))
    parts = [f'<section class="card" id="{esc(set_id)}"><h3>{esc(s.title)}</h3>']
    if s.request is not None:
        parts.append(
            f'<pre class="command">{esc(sample_command(s.request, s.folder))}</pre>'
            '<p class="note">Rebuilt from the request that <code>sampling.json</code> records.</p>'
            "<details><summary>the request as recorded</summary>"
            f"{json_table(s.folder / 'sampling.json', s.request)}</details>"
        )
        items = len(s.wavs) + len(s.clouds) + sum(len(sdf_records(p.read_text(errors="replace"))) for p in s.sdfs)
        if isinstance(s.request.get("n"), int) and items != s.request["n"]:
            parts.append(
                f'<p class="note"><b>Note:</b> the folder holds {items} samples and the request {s.request["n"]}: '
                "files of other requests are here too, and the command made only some of them.</p>"
            )
    elif s.step is not None:
        parts.append(
            f'<p class="note">Written during training by <code>SampleCallback</code> at step {s.step} '
            f"(<code>{esc(rel)}</code>), with the run's sampler settings.</p>"
        )
    else:
        parts.append(f'<p class="note"><code>{esc(s.folder)}</code>: no <code>sampling.json</code> here.</p>')
    if s.metrics is not None:
        table = json_table(s.folder / "metrics.json", s.metrics)
        parts.append(f"<details open><summary>metrics.json</summary>{table}</details>")
    if s.wavs:
        parts.append(audio_html(s.wavs, set_id))
    if s.clouds or s.meshes:
        parts.append(points_html(s.clouds, s.meshes, set_id))
        needs.add("three")
    for sdf in s.sdfs:
        parts.append(molecules_html(sdf, f"{set_id}-{_slug(sdf.stem)}"))
        needs.add("3dmol")
    if s.empty:
        parts.append('<p class="note">No sample files (*.wav, *.ply, *.sdf) in this folder.</p>')
    parts.append("</section>")
    return "".join(parts)


def _libraries_html(needs: set[str]) -> str:
    """3Dmol as a classic script (it defines ``$3Dmol``); three's ES modules as inert text that ``loadThree``
    imports through Blob URLs."""
    parts = []
    for name in sorted(needs):
        lib = VENDORED[name]
        for file in lib.files:
            kind = "text/javascript" if name == "3dmol" else "text/plain"
            parts.append(
                f"<!-- {esc(lib.name)} {lib.version} ({esc(lib.license)}) -->"
                f'<script type="{kind}" id="vendor-{file}">{inline_script(vendored(file))}</script>'
            )
    return "".join(parts)


def render_page(contents: Contents) -> str:
    """The page of ``contents`` as one HTML string."""
    root = contents.root
    needs: set[str] = set()
    samples = "".join(_sample_set_html(s, root, needs) for s in contents.sample_sets)
    left_out = "".join(f'<p class="note">Not shown: {esc(n)}.</p>' for n in contents.left_out)
    metrics = ""
    if contents.json_files:
        metrics = f"<h2>Metrics files</h2>{json_files_html(contents.json_files, root)}"
    used = ", ".join(f"{VENDORED[n].name} {VENDORED[n].version}" for n in sorted(needs)) or "none"
    when = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(root.name)}: multidiff report</title>
<style>{asset("report.css")}</style></head>
<body><header><h1>{esc(root.name)} <span class="meta">{esc(contents.kind)}</span></h1>
<div class="meta"><code>{esc(root)}</code> &middot; report written {esc(when)} by
<code>python -m multidiff.report</code> &middot; viewers: {esc(used)}</div></header>
<main>{_command_html(contents)}{_curves_html(contents)}{metrics}
{f"<h2>Samples</h2>{left_out}{samples}" if samples or left_out else ""}
</main>
{_libraries_html(needs)}<script>{inline_script(asset("report.js"))}</script>
</body></html>
"""
