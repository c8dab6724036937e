"""srcgrad's version, in a module of its own: stages read it without importing the package."""
__version__ = "0.1.0"
