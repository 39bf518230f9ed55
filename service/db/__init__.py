"""Database models and the query functions that use them (one module per table family)."""
