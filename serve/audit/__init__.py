"""`zkserve audit`: one page an auditor can read and keep, for a proof or a scoring job.

`serve.audit.gather` checks everything again (proof, package, verifier record, chain) and
returns a typed `serve.audit.report.AuditReport`; `serve.audit.render` turns it into HTML
and JSON. Kept apart so the page can be tested on a constructed report.
"""
