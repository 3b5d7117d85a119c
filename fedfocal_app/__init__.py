"""fedfocal_app: FedFocal (focal-loss clients, loss-focused aggregation) on Flower."""
