"""Lightning callbacks: reconstruction grids, attention maps, throughput."""
