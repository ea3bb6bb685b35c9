from mirror.cli.main import main

__all__ = ["main"]
