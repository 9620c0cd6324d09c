"""What every layer stands on: errors, atomic checksummed I/O, progress, the artifacts' paths, record ids,
and the process runtime settings the entry points apply. Imports nothing else of the package."""
