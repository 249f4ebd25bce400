"""Notifications: rules, the events producers write, the debounce, the delivery outbox.

- :mod:`~server.notify.rules`: a rule and whether an event matches it;
- :mod:`~server.notify.events`: what producers write (in their own transaction, no I/O);
- :mod:`~server.notify.planner`: events to messages, with the debounce;
- :mod:`~server.notify.delivery`: webhooks (signed) and e-mail, retries with backoff;
- :mod:`~server.notify.worker`: the upkeep job and the rules in force.
"""
