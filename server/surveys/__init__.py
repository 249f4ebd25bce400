"""The customer's voice: a survey after every closed case, follow-up of unhappy customers.

Closing an incident creates a one-time survey (:mod:`server.surveys.records`);
the customer answers on a public page or its JSON twin (:mod:`server.surveys.page`,
``/api/v1/surveys/{token}``) in their language (:mod:`server.surveys.i18n`); a low
score opens a follow-up for the desk's call-back queue. The figures (NPS, CSAT)
are in :mod:`server.kpi.voice`.
"""
