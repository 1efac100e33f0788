"""Lightning glue: the LightningModule (losses, optimiser, validation) and the LightningDataModule."""
