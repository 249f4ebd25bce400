"""Device identity: the device CA, enrollment, and the generated broker configuration."""
