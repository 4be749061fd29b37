"""The package version (read by setup.py too) and the torch releases it supports."""
__version__ = "0.1.0"

# Oldest and newest torch minor releases this version is tested with: 2.11 on the lent GPU
# machines, 2.14 here. The built library still needs the exact torch it was built against.
TORCH_SUPPORTED = ((2, 11), (2, 14))
