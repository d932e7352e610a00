"""Render the report: sections -> self-contained HTML (Jinja2) -> PDF (WeasyPrint), and the stage.

    render_html(sections, title, subtitle, generated) -> str   autoescape on, CSS inline, figures as
                                                               base64 PNG data URIs
    render_pdf(html) -> (bytes, pages)                         the print rules of assets/report.css
    write_report(cfg, config_ref) -> ReportResult              report.html, report.pdf, report.json
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import jinja2
import matplotlib

from pipeline import paths
from pipeline.config import Config, save_resolved
from pipeline.io import atomic_write_bytes, atomic_write_text, write_json
from pipeline.report.artifacts import load_experiment
from pipeline.report.blocks import Section
from pipeline.report.sections import build_sections

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
ASSETS = HERE / "assets"


def _environment() -> jinja2.Environment:
    # autoescape=True for every template: artifact text (tickers, rule names) is never trusted HTML.
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_html(sections: list[Section], title: str, subtitle: str, generated: str) -> str:
    """The self-contained HTML document (CSS inline, images as data URIs)."""
    css = (ASSETS / "report.css").read_text()
    return _environment().get_template("report.html.j2").render(
        sections=sections, title=title, subtitle=subtitle, generated=generated, css=css)


def pdf_font_css() -> str:
    """@font-face rules pointing at the DejaVu files matplotlib ships: offline and always present."""
    ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    faces = []
    for fam, fname, weight, style in (("DejaVu Sans", "DejaVuSans.ttf", "normal", "normal"),
                                      ("DejaVu Sans", "DejaVuSans-Bold.ttf", "bold", "normal"),
                                      ("DejaVu Sans", "DejaVuSans-Oblique.ttf", "normal", "italic"),
                                      ("DejaVu Sans Mono", "DejaVuSansMono.ttf", "normal", "normal")):
        if (ttf / fname).exists():
            faces.append(f'@font-face {{ font-family: "{fam}"; src: url("{(ttf / fname).as_uri()}"); '
                         f"font-weight: {weight}; font-style: {style}; }}")
    return "\n".join(faces)


def render_pdf(html: str) -> tuple[bytes, int]:
    """PDF bytes of the HTML (WeasyPrint, print stylesheet of report.css) and its page count."""
    # WeasyPrint logs every parsing and layout step at INFO (also on import); only its warnings
    # belong in the stage's log.
    logging.getLogger("weasyprint.progress").setLevel(logging.WARNING)
    import weasyprint

    doc = weasyprint.HTML(string=html, base_url=str(ASSETS)).render(
        stylesheets=[weasyprint.CSS(string=pdf_font_css())])
    return doc.write_pdf(), len(doc.pages)


@dataclass
class ReportResult:
    html: Path
    pdf: Path | None
    pages: int | None
    sections: list[dict]


def write_report(cfg: Config, config_ref: str | None = None, pdf: bool | None = None) -> ReportResult:
    """Compose reports/<name>/report.html (+ report.pdf, report.json, config.yaml) from artifacts."""
    exp = load_experiment(cfg)
    sections = build_sections(exp, config_ref)
    title = cfg.report.title or f"(Re-)Imag(in)ing Price Trends — experiment “{cfg.name}”"
    subtitle = (f"Replication of Jiang, Kelly & Xiu (2020/2023): {cfg.train.image_set} images, "
                f"{cfg.train.model} CNN, R{cfg.train.horizon} labels, {cfg.panel.source} data")
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    html = render_html(sections, title, subtitle, generated)
    out = paths.report_dir(cfg)
    atomic_write_text(out / "report.html", html)
    pdf_path, pages = None, None
    if cfg.report.pdf if pdf is None else pdf:
        data, pages = render_pdf(html)
        pdf_path = out / "report.pdf"
        atomic_write_bytes(pdf_path, data)
    summary = [{"id": s.id, "title": s.title, "status": s.status,
                "figures": sum(b["kind"] == "figure" for b in s.blocks),
                "tables": sum(b["kind"] == "table" for b in s.blocks)} for s in sections]
    write_json(out / "report.json", {"sections": summary, "pages": pages, "generated": generated})
    save_resolved(cfg, out)
    log.info("report: %s%s (%s)", out / "report.html", f" and report.pdf, {pages} pages" if pdf_path else "",
             ", ".join(f"{s['id']}={s['status']}" for s in summary))
    return ReportResult(html=out / "report.html", pdf=pdf_path, pages=pages, sections=summary)


