"""Lightning callbacks: reconstruction grids, attention maps, epoch seeding, throughput."""
