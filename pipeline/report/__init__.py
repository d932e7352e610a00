"""Report stage: compose HTML and PDF from the other stages' artifacts (never retrains).

Public entry points: :func:`pipeline.report.render.write_report` and the loaders of
:mod:`pipeline.report.artifacts` (also used by the notebooks).
"""
