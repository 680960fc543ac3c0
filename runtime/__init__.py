"""The spiking runtime: numpy and numba only."""
