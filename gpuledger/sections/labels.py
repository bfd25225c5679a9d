"""Pod label keys naming each payer field by default, first present wins: the gpuledger.dev/ keys, then common conventions.

The worker reads them (``worker.*_labels``); the collector copies all of them onto each GPU process.
"""

from __future__ import annotations

ORG_LABELS = ("gpuledger.dev/org", "org")
TEAM_LABELS = ("gpuledger.dev/team", "team")
PROJECT_LABELS = ("gpuledger.dev/project", "project")
COST_CENTRE_LABELS = ("gpuledger.dev/cost-centre", "cost-center", "cost-centre", "cost_centre", "costcenter")
