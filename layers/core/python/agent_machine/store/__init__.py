"""Data access: one module per table. Domain code calls these; nothing else touches DynamoDB directly."""
