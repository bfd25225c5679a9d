"""Budget-alert notifier: ``BudgetAlert`` records from Kafka to Slack and JSON webhooks.

Delivery is at-least-once towards Slack with a local durable ledger of delivered
``alert_id`` values, so replays and duplicates on the topic never post twice; see
``runner`` for the exact guarantee.
"""

from streams.notifier.runner import run_notifier
from streams.notifier.settings import NotifierSettings, Route, Target

__all__ = ["NotifierSettings", "Route", "Target", "run_notifier"]
