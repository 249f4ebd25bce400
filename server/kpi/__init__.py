"""Incidents and the KPIs computed from them (KPIS.md)."""
