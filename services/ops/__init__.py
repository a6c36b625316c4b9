"""Operations plumbing shared by the long-running services: metrics, health, signals."""
