"""Fleet health: collectors and profiles, the samples they make, the outbox, the broker link."""
