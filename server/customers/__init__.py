"""The service desk's customers and incoming calls: CTI lookup, call records, CSV import."""
