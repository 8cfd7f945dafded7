"""resin: a port program that spawns and supervises OS processes for the BEAM."""

__version__ = "0.4.0"
