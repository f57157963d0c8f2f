"""LightningDataModules and their transforms."""
