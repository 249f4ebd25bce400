"""Call-center incidents: recording them (:mod:`.records`), CSV in and out, demo data.

The KPIs computed from them live in :mod:`server.kpi`, which reads the incident
table and never imports this package (an import-linter contract keeps it so).
"""
