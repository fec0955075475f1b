"""Storage: SQLModel tables, sessions, the inbox queue and ticket queries."""
