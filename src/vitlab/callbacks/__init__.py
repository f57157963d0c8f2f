"""Lightning callbacks: reconstruction grids, attention maps, weight EMA."""
