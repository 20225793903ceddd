"""Operations: what an operator needs at start-up and while running (start-up report,
model-shutdown watch, the by-hand migrate command)."""
