"""Pure view models of ``signalbeam tui``: readers of the hub's documents and the rules of
each view (rows, filters, sorting, texts). No Textual and no I/O (an import-linter contract
keeps it so), so every rule is unit-tested directly."""
