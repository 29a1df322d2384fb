"""The search step's page for the Kubeflow UI: the run's plots and its top-k table in one self-contained
HTML file (``Output[HTML]``), so that whoever starts a run from the UI sees the search without a terminal.

The plots are ``nasrl report``'s own (:func:`controller.report.write_report`: reward per trial with the
REINFORCE baseline, best so far, the best architecture), embedded as base64 ``data:`` URIs: the UI shows
the file in a sandboxed frame that can load nothing else from the store.
"""

from __future__ import annotations

import base64
import html
import logging
import tempfile
from pathlib import Path

from components.search.step import SearchStep

log = logging.getLogger(__name__)

STYLE = """
body { font-family: sans-serif; margin: 1em; color: #222; }
img { max-width: 100%; height: auto; display: block; margin: 0.5em 0 1.5em; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
"""


def search_report_html(step: SearchStep) -> str:
    """The whole page: a heading, the report's plots, then the top-k table."""
    summary = step.summary
    title = f"nasrl search {summary.get('run_id', '')}".strip()
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{plots_html(step.run_dir)}{step.table_html}</body>\n</html>\n"
    )


def plots_html(run_dir: str) -> str:
    """``nasrl report``'s PNGs of ``run_dir`` as ``<img>`` tags, in the order it writes them.

    A plot that cannot be drawn costs the page its pictures, not the search step: the search's results are
    in the store and its outputs either way, and a retried step would only fail on the same plot again.
    """
    from controller.report import write_report

    with tempfile.TemporaryDirectory(prefix="nasrl-report-") as out:
        try:
            pngs = write_report([run_dir], out)
        except Exception as e:  # anything matplotlib or a plot raises; the page says what
            log.warning("the search step's page has no plots: %s", e, exc_info=True)
            return f"<p>No plots: {html.escape(f'{type(e).__name__}: {e}')}</p>\n"
        return "".join(_img(Path(png)) for png in pngs)


def _img(png: Path) -> str:
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(png.stem)}" src="data:image/png;base64,{data}">\n'
