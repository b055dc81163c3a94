"""The audit report as one self-contained HTML page (inline CSS and SVG, no script, no
external asset) and as JSON. Jinja2 autoescapes every value taken from the report."""

from __future__ import annotations

import json

from jinja2 import Environment
from markupsafe import Markup

from serve.audit.plots import render_svg
from serve.audit.report import AuditReport

STATUS_TEXT = {
    "verified": "verified",
    "failed": "FAILED",
    "unchecked": "NOT CHECKED",
    "warning": "warning",
    "unproven": "unproven",
}

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>zkserve audit: {{ report.kind }} {{ report.subject }}</title>
<style>
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; margin: 0;
       background: #f6f8fa; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 28px 0 8px; border-bottom: 1px solid #d0d7de; padding-bottom: 4px; }
h3 { font-size: 14px; margin: 16px 0 6px; }
.subject { font-family: ui-monospace, monospace; word-break: break-all; }
.meta { color: #59636e; }
.verdict { display: inline-block; padding: 6px 12px; border-radius: 6px; font-weight: 600; margin: 12px 0; }
.verdict.verified { background: #dafbe1; color: #116329; }
.verdict.failed, .verdict.unchecked { background: #ffebe9; color: #a40e26; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid #d0d7de; }
th, td { text-align: left; vertical-align: top; padding: 5px 8px; border-bottom: 1px solid #eaeef2; }
th { background: #f6f8fa; font-weight: 600; }
table.facts { table-layout: fixed; }
table.facts th:nth-child(1) { width: 15%; } table.facts th:nth-child(2) { width: 33%; }
table.facts th:nth-child(3) { width: 110px; }
td.value, td.mono { font-family: ui-monospace, monospace; word-break: break-all; }
td.how { color: #59636e; font-size: 13px; overflow-wrap: anywhere; }
.badge { display: inline-block; min-width: 84px; padding: 1px 6px; border-radius: 4px; font-size: 12px;
         font-weight: 600; text-align: center; }
.s-verified .badge { background: #dafbe1; color: #116329; }
.s-failed .badge, .s-unchecked .badge { background: #cf222e; color: #fff; }
.s-failed td, .s-unchecked td { color: #a40e26; }
tr.s-failed, tr.s-unchecked { background: #fff5f5; }
.s-warning .badge { background: #fff8c5; color: #7d4e00; border: 1px solid #d4a72c; }
.s-unproven .badge { background: #eaeef2; color: #59636e; }
.note { color: #59636e; font-size: 13px; margin: 4px 0 10px; }
svg.plot { background: #fff; border: 1px solid #d0d7de; display: block; margin: 6px 0; }
svg .grid { stroke: #eaeef2; } svg .axis { stroke: #59636e; }
svg .tick, svg .legend, svg .label, svg .empty { font: 11px system-ui, sans-serif; fill: #1f2328; }
footer { margin-top: 32px; color: #59636e; font-size: 12px; }
</style>
</head>
<body>
<main>
<h1>zkserve audit report: {{ "proof" if report.kind == "proof" else "scoring job" }}</h1>
<div class="subject">{{ report.subject }}</div>
<div class="meta">generated {{ report.generated_at }} by <code>zkserve audit</code>; every fact says how it was
checked at that time. Red facts failed or could not be checked.</div>
<div class="verdict {{ report.verdict }}">{{ verdict_text }}</div>
<div class="meta">{{ counts_text }}</div>
{% for section in report.sections %}
<h2>{{ section.title }}</h2>
{% if section.facts %}
<table class="facts">
<tr><th>fact</th><th>value</th><th>status</th><th>how it was checked</th></tr>
{% for fact in section.facts %}
<tr class="s-{{ fact.status }}"><td>{{ fact.label }}</td><td class="value">{{ fact.value }}</td>
<td><span class="badge">{{ status_text[fact.status] }}</span></td><td class="how">{{ fact.how }}</td></tr>
{% endfor %}
</table>
{% endif %}
{% for table in section.tables %}
<h3>{{ table.title }}</h3>
{% if table.note %}<div class="note">{{ table.note }}</div>{% endif %}
<table>
<tr>{% for column in table.columns %}<th>{{ column }}</th>{% endfor %}</tr>
{% for row in table.rows %}{% set status = table.row_status[loop.index0] if table.row_status else "" %}
<tr{% if status %} class="s-{{ status }}"{% endif %}>
{% for cell in row %}<td class="mono">{{ cell }}</td>{% endfor %}
</tr>
{% endfor %}
</table>
{% endfor %}
{% for plot in section.plots %}
<h3>{{ plot.title }}</h3>
{{ svg(plot) }}
{% if plot.note %}<div class="note">{{ plot.note }}</div>{% endif %}
{% endfor %}
{% endfor %}
<footer>Statuses: <b>verified</b> checked now and true; <b>FAILED</b> checked now and false; <b>NOT CHECKED</b>
could not be checked; <b>warning</b> true with a trust caveat; <b>unproven</b> shown as found, bound by nothing.
</footer>
</main>
</body>
</html>
"""

_environment = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
_template = _environment.from_string(TEMPLATE)


def verdict_text(report: AuditReport) -> str:
    verdict = report.verdict
    if verdict == "verified":
        warnings = report.counts()["warning"]
        return "Every check passed" + (
            f" ({warnings} warning{'s' if warnings > 1 else ''}: read them)" if warnings else ""
        )
    if verdict == "failed":
        return "Some checks FAILED"
    return "Some facts could NOT be checked"


def render_html(report: AuditReport) -> str:
    return _template.render(
        report=report,
        status_text=STATUS_TEXT,
        verdict_text=verdict_text(report),
        counts_text=", ".join(f"{count} {STATUS_TEXT[status]}" for status, count in report.counts().items() if count),
        svg=lambda plot: Markup(render_svg(plot)),
    )


def render_json(report: AuditReport) -> str:
    return json.dumps(report.to_dict(), indent=2)
