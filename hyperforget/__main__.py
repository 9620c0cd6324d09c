"""`hyperforget` / `python -m hyperforget`: apply the runtime settings, then run the CLI.

The settings (`hyperforget.base.runtime`) must be in the environment before torch loads its OpenMP
runtime, so the CLI, which imports torch, is imported only after them.
"""

from hyperforget.base.runtime import configure


def main() -> None:
    configure()
    from hyperforget.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
