"""Compose the experiment report (HTML and PDF) from the stages' artifacts only.

The report is three modules:

    pipeline.report.blocks     the content blocks a section holds (text, kv, table, figure, ...)
    pipeline.report.sections   one builder per section, with its prose: build_sections(exp, ref)
    pipeline.report.render     HTML (Jinja2) and PDF (WeasyPrint) rendering and write_report(cfg)

This module names their entry points for the stage's command line and callers.
"""

from __future__ import annotations

from pipeline.report.blocks import Section, table_block
from pipeline.report.render import ReportResult, render_html, render_pdf, write_report
from pipeline.report.sections import SECTION_BUILDERS, build_sections
from pipeline.tabular import fmt

__all__ = ["SECTION_BUILDERS", "ReportResult", "Section", "build_sections", "fmt", "render_html",
           "render_pdf", "table_block", "write_report"]
