"""Budget-alert notifier: ``BudgetAlert`` records from Kafka to Slack and JSON webhooks.

Delivery is at-least-once towards Slack with a local durable ledger of delivered
``alert_id`` values, so replays and duplicates on the topic never post twice; see
``runner`` for the exact guarantee.
"""

from gpuledger.sections.notifier import NotifierSettings, Route, Target
from streams.notifier.runner import run_notifier

__all__ = ["NotifierSettings", "Route", "Target", "run_notifier"]
