"""Incidents and the KPIs computed from them (docs/kpis.md)."""
