"""Lightning callbacks: reconstruction grids, attention maps, misclassified images, epoch
seeding, throughput."""
