"""The fieldlink server: fleet registry, ingest, sessions, incidents and KPIs."""
