"""The audit: prove from the log alone that every token moved for a reason.

One pass over the log checks each family of rules (`money`, `charges`, `holds`, `gpus`,
`lifecycle`), each in its own module, against the facts folded so far (`facts`); `views`
compares the live read models with a replay. `CHECKS` lists every rule and its code.
"""

from dante.projections.audit.auditor import Auditor
from dante.projections.audit.report import (
    CHECKS,
    AuditReport,
    Check,
    PendingSettlement,
    ViewsComparison,
    Violation,
)
from dante.projections.audit.run import audit, audit_log

__all__ = [
    "CHECKS",
    "AuditReport",
    "Auditor",
    "Check",
    "PendingSettlement",
    "ViewsComparison",
    "Violation",
    "audit",
    "audit_log",
]
