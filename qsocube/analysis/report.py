"""report/index.html: one self-contained offline page (inline CSS, relative links to the
PNG figures, no CDN), and report/associations.csv.

A few lines of inline script mark every image with its loaded width once the page has
loaded and flag broken ones in red, so a reader (or the headless-browser test) sees at once
whether a figure is missing.
"""

from __future__ import annotations

import csv
import html
from pathlib import Path

import numpy as np

from qsocube.analysis.associations import Associations
from qsocube.analysis.figures_common import FigureInfo
from qsocube.core import layout
from qsocube.core.atomic import atomic_path, write_text_atomic

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:1em auto;padding:0 1em;
color:#222;line-height:1.4}h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em}td,th{border:1px solid #ccc;
padding:2px 6px;text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}
figure{margin:1em 1em 1em 0;display:inline-table;vertical-align:top}
figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.85em;
color:#444;display:table-caption;caption-side:bottom}.note{color:#a00}.small{font-size:.8em;color:#666}
nav a{margin-right:1em}img.broken{outline:3px solid red}div.wide{overflow-x:auto}"""
SCRIPT = """window.addEventListener('load',function(){var imgs=document.images,ok=0;
for(var i=0;i<imgs.length;i++){var im=imgs[i];im.setAttribute('data-natural-width',
im.naturalWidth);if(im.complete&&im.naturalWidth>0){ok++;}else{im.className+=' broken';
var p=document.createElement('p');p.className='note';p.textContent='figure missing: '+
im.getAttribute('src');im.parentNode.insertBefore(p,im);}}document.body.setAttribute(
'data-images',ok+'/'+imgs.length);});"""


MAX_LISTED = 500  # rejected inputs listed by name; the rest are counted


class Html(str):
    """Markup that table() inserts as is; every other cell value is escaped."""


def esc(value: object) -> str:
    return html.escape(str(value))


def fmt(value: object, digits: int = 3) -> str:
    if isinstance(value, (float, np.floating)):
        return "&ndash;" if not np.isfinite(value) else f"{value:.{digits}g}"
    return esc(value)


def table(header: list[str], rows: list[list[object]], left: int = 1) -> str:
    """HTML table (header cells are trusted markup such as '&rho;'; body cells are escaped
    unless Html); the first ``left`` columns are left-aligned (names), the rest numbers."""
    def cell(tag: str, k: int, v: object) -> str:
        cls = ' class="l"' if k < left else ""
        return f"<{tag}{cls}>{v if isinstance(v, Html) or tag == 'th' else fmt(v)}</{tag}>"
    head = "".join(cell("th", k, h) for k, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", k, v) for k, v in enumerate(r)) + "</tr>"
                   for r in rows)
    return f"<div class='wide'><table><tr>{head}</tr>{body}</table></div>"


def figure(info: FigureInfo) -> str:
    return (f'<figure id="fig-{esc(Path(info.file).stem)}"><img src="{esc(info.file)}" '
            f'alt="{esc(info.title)}"><figcaption><b>{esc(info.title)}.</b> '
            f"{esc(info.caption)}</figcaption></figure>")


def write_associations_csv(assoc: Associations, target: Path) -> None:
    records = assoc.records()
    with atomic_path(target) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]) if records else ["column"])
        writer.writeheader()
        for record in records:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in record.items()})


def summary_section(summary: dict) -> str:
    reasons = "; ".join(f"{kind} ({n:,})" for kind, n in summary["rejected_kinds"][:8])
    rows = [["product version", summary["product_version"]], ["source", summary["source"]],
            ["created", summary["created"]], ["cube", summary["cube"]],
            ["spectra", f"{summary['n_spectra']:,}"],
            ["split (train / validation / test)", " / ".join(f"{n:,}" for n in
                                                             summary["split_counts"])],
            ["rejected inputs", f"{len(summary['rejected_reasons']):,}"
             + (f": {reasons}" if reasons else "")],
            ["wavelength grid", summary["grid_text"]],
            ["normalisation / resampling", f"{summary['normalisation']} / "
             f"{summary['resampling']}"],
            ["models (latent sizes)", ", ".join(str(s) for s in summary["latent_sizes"])
             or "none"],
            ["software / git commit", f"{summary['software_version']} / {summary['git_commit']}"]]
    listing = ""
    files = summary.get("rejected_files", [])
    if files:
        shown = list(zip(files, summary["rejected_reasons"], strict=False))[:MAX_LISTED]
        more = f" (first {MAX_LISTED} shown)" if len(files) > MAX_LISTED else ""
        listing = (f"<details><summary>Rejected inputs{more}</summary>"
                   + table(["input", "reason"], [list(r) for r in shown], left=2)
                   + "</details>")
    return "<h2 id='summary'>Release summary</h2>" + table(
        ["item", "value"], [[k, str(v)] for k, v in rows], left=2) + listing


def fresh_surveys_clause(fidelity: dict) -> str:
    """The clause "; on N fresh surveys ..., mean +- sd on average" when the fidelity
    record holds the simulator's mean two-sample AUC, else nothing."""
    fresh = fidelity.get("two_sample_fresh_surveys")
    if not fresh or not fresh.get("surveys"):
        return ""
    spread = f" &plusmn; {fmt(fresh['sd_auc'])}" if fresh.get("sd_auc") is not None else ""
    return (f"; on {len(fresh['surveys'])} fresh surveys of {fresh['n_quasars']} quasars "
            f"(which simulated spectra a survey offers as matches moves it), "
            f"{fmt(fresh['mean_auc'])}{spread} on average")


def simulation_section(record: dict | None) -> str:
    """What generated a simulated release's input, and how it compares with real quasars."""
    if not record:
        return "<p class='note'>Real spectra: no simulated input.</p>"
    counts = record.get("counts", {})
    rows = [["generator", record.get("generator", "")], ["seed", record.get("seed", "")],
            ["catalogue rows / spectra", f"{counts.get('catalog_rows', '')} / "
             f"{counts.get('spectra', '')}"],
            ["quasars / stars / galaxies", f"{counts.get('quasars', '')} / "
             f"{counts.get('stars', '')} / {counts.get('galaxies', '')}"],
            ["artefacts", ", ".join(f"{k} {counts[k]}" for k in
                                    ("dead_fibre", "misfluxed_fibre", "sky_subtraction_failure",
                                     "wrong_redshift") if k in counts)]]
    html = table(["item", "value"], [[k, str(v)] for k, v in rows], left=2)
    fidelity = record.get("fidelity")
    if not fidelity:
        return html + "<p class='note'>No fidelity figures recorded with this generator.</p>"
    auc = fidelity.get("two_sample", {})
    html += ("<p>Fidelity, recorded with the simulator's package data (bench/fidelity.py, on "
             f"{fidelity.get('real_held_out_encoded', '?')} real SDSS quasars held out of every "
             "fit): a classifier telling real from simulated spectra at matched redshift and "
             f"S/N reaches a cross-validated AUC of {fmt(auc.get('auc'))} (0.5 = "
             f"indistinguishable){fresh_surveys_clause(fidelity)}.</p>")
    by_z = fidelity.get("by_redshift", [])
    html += table(["redshift", "real quasars (S/N >= 10)", "chi2 real / simulated",
                   "latent-redshift share"],
                  [[f"{r['z'][0]:g}-{r['z'][1]:g}", r["n_real"], fmt(r.get("chi2_ratio")),
                    fmt(r.get("latent_z_share"))] for r in by_z], left=1)
    return html


def association_section(assoc: Associations, corner_model: int, figures: list[str]) -> str:
    """Body of the association section: explanation, figure, strongest-per-column table and
    the rho matrix of the corner model."""
    parts = ["<p>For every latent dimension of every model and every column: Spearman's rank "
             "correlation &rho; and the mutual information I (nats; equal-frequency binning, "
             "Miller-Madow corrected), also as r<sub>I</sub> = &radic;(1 &minus; e<sup>&minus;2I"
             "</sup>) on the same 0..1 scale as |&rho;|. All rows: <a href='associations.csv'>"
             "associations.csv</a>.</p>", *figures]
    r_info = assoc.r_info
    rows = []
    for j, column in enumerate(assoc.columns):
        if assoc.n[j] == 0 or not np.isfinite(assoc.rho[:, j]).any():
            rows.append([column, int(assoc.n[j]), Html("<i>too few measured</i>"), "", "", ""])
            continue
        size, dim, rho = assoc.strongest(column)
        i = assoc.rows.index((size, dim))
        c_size, c_dim, c_rho = (assoc.strongest(column, corner_model)
                                if corner_model in {s for s, _ in assoc.rows} else (0, 0, np.nan))
        rows.append([column, int(assoc.n[j]), f"L = {size}, z{dim}", rho, r_info[i, j],
                     f"z{c_dim}: {c_rho:+.3f}" if c_size else ""])
    parts.append("<h3>Strongest dimension per column</h3>" + table(
        ["column", "spectra", "strongest |&rho;| (any model)", "&rho;", "r_I",
         f"strongest in L = {corner_model}"], rows))
    mine = [i for i, (s, _) in enumerate(assoc.rows) if s == corner_model]
    if mine:
        matrix = [[f"z{assoc.rows[i][1]}"] + [_rho_cell(assoc.rho[i, j])
                                                   for j in range(len(assoc.columns))]
                  for i in mine]
        parts.append(f"<h3>Spearman &rho; of the {corner_model}-dimensional model</h3>"
                     + table(["dim", *assoc.columns], matrix))
    return "".join(parts)


def _rho_cell(rho: float) -> Html:
    if not np.isfinite(rho):
        return Html("<span class='small'>&ndash;</span>")
    shade = int(255 - 150 * min(abs(rho), 1.0))
    colour = f"rgb(255,{shade},{shade})" if rho > 0 else f"rgb({shade},{shade},255)"
    return Html(f"<span style='background:{colour};padding:0 3px'>{rho:+.2f}</span>")


def write_report(folder: Path, summary: dict, sections: list[tuple[str, str, str]]) -> Path:
    """index.html from (anchor, heading, html body) sections after the summary."""
    nav = " ".join(f"<a href='#{a}'>{esc(h)}</a>" for a, h, _ in
                   [("summary", "Summary", ""), *sections])
    body = "".join(f"<h2 id='{a}'>{esc(h)}</h2>{content}" for a, h, content in sections)
    title = f"qsocube {summary['product_version']} ({summary['source']}): release report"
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}"
            f"</title><meta name='viewport' content='width=device-width,initial-scale=1'>"
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1><nav>{nav}</nav>"
            f"{summary_section(summary)}{body}<p class='small'>Written by qsocube analyze from "
            f"{esc(summary['cube'])}; figures are PNG files beside this page.</p>"
            f"<script>{SCRIPT}</script></body></html>\n")
    target = folder / layout.REPORT_INDEX
    write_text_atomic(target, page)
    return target
